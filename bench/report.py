"""How the benchmarks print: aligned tables (names left, numbers right)."""


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A row shorter than the header is a name and a message (a variant that
    did not run): printed as such, out of the columns."""
    table = [header, *rows]
    widths = [
        max(len(row[i]) for row in table if len(row) == len(header))
        for i in range(len(header))
    ]
    print(f"\n{title}")
    for index, cells in enumerate(table):
        if len(cells) != len(header):
            print(f"{cells[0].ljust(widths[0])}  {' '.join(cells[1:])}")
        else:
            print(
                "  ".join(
                    cell.ljust(width) if column == 0 else cell.rjust(width)
                    for column, (cell, width) in enumerate(
                        zip(cells, widths, strict=True)
                    )
                )
            )
        if index == 0:
            print("  ".join("-" * width for width in widths))
