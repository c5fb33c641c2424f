"""The form that creates a conversation: the pick page and the JSON API both validate with it."""

from django import forms

from sessions.models import Topic
from sessions.upstreams import registry


class PickForm(forms.Form):
    provider = forms.ChoiceField()
    topic = forms.ModelChoiceField(queryset=Topic.objects.filter(is_active=True), empty_label=None)
    voice = forms.ChoiceField()
    language = forms.ChoiceField()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        providers = registry.offered()
        self.fields["provider"].choices = [(p.key, p.label) for p in providers]
        self.fields["provider"].initial = registry.DEFAULT
        # Every provider's voices and languages are valid choices at field level; clean()
        # checks that they belong to the chosen provider.
        # (dicts keep the registry's order: the default provider's voices and languages first)
        voices = {v: label for p in providers for v, label in p.voices.items()}
        self.fields["voice"].choices = list(voices.items())
        languages = dict.fromkeys(code for p in providers for code in p.languages)
        self.fields["language"].choices = [(c, registry.LANGUAGE_NAMES.get(c, c)) for c in languages]
        default = registry.get(registry.DEFAULT)
        self.fields["language"].initial = "en"
        self.fields["voice"].initial = default.voices_for("en")[0]

    def clean(self):
        data = super().clean()
        key = data.get("provider")
        if not key:
            return data
        provider = registry.get(key)
        mode, why = registry.mode(key)
        if mode == "unavailable":
            self.add_error("provider", f"{provider.label} is unavailable: {why}.")
        voice, language = data.get("voice"), data.get("language")
        if language and language not in provider.languages:
            self.add_error("language", f"{provider.label} does not speak {language!r}.")
        elif voice and voice not in provider.voices:
            self.add_error("voice", f"{provider.label} does not offer the voice {voice!r}.")
        elif voice and language and voice not in provider.voices_for(language):
            self.add_error("voice", f"{provider.label} has no voice {voice!r} for {language!r}.")
        problem = topic_language_problem(data.get("topic"), language)
        if problem and "language" not in self.errors:
            self.add_error("language", problem)
        return data


def topic_language_problem(topic, language: str | None) -> str:
    """Why `topic` cannot be held in `language` (it has no greeting, persona, FAQ in it), or ""."""
    if topic is None or not language or language in topic.languages():
        return ""
    names = registry.LANGUAGE_NAMES
    written = ", ".join(names.get(c, c) for c in topic.languages())
    return f"{topic.title} has no {names.get(language, language)} content (it is written in {written})."
