"""Pages: upload, list, detail (owned by the thumbnails app)."""

from django.urls import path

from thumbnails import views

app_name = "thumbnails"

urlpatterns = [
    path("images/", views.image_list, name="list"),
    path("images/upload/", views.upload, name="upload"),
    path("images/<int:pk>/", views.image_detail, name="detail"),
    path("images/<int:pk>/card/", views.image_card, name="card"),
]
