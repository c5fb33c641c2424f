from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from playground import views
from sessions import abviews, api, audience_views, comparison, downloads
from sessions import views as session_views

urlpatterns = [
    path("", views.landing, name="landing"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("talk/", views.pick, name="pick"),
    path("talk/new/", views.talk_new, name="talk_new"),
    path("talk/<uuid:conversation_id>/", views.talk, name="talk"),
    path("talk/<uuid:conversation_id>/share/", audience_views.share, name="share"),
    path("watch/<str:token>/", audience_views.watch, name="watch"),
    path("history/", session_views.history, name="history"),
    path("history/<uuid:conversation_id>/", session_views.conversation, name="conversation"),
    path("history/<uuid:conversation_id>/save/", session_views.save_again, name="conversation_save"),
    path("history/<uuid:conversation_id>/recording.wav", downloads.recording, name="conversation_recording"),
    path("history/<uuid:conversation_id>/export.<str:fmt>", downloads.export, name="conversation_export"),
    path("compare/", comparison.comparison, name="compare"),
    path("compare/runs/", include(abviews.urls)),
    path("api/conversations/", api.create_conversation, name="api_conversations"),
    path("vad/silero_vad.onnx", session_views.vad_model, name="vad_model"),
    path("admin/", admin.site.urls),
    path("favicon.ico", views.favicon),
]
