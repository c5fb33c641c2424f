// Languages follow the chosen provider and topic (only those both can do); voices follow the
// provider and language. The server validates again.
const catalogue = JSON.parse(document.getElementById("provider-catalogue").textContent);
const topicLanguages = JSON.parse(document.getElementById("topic-languages").textContent);
const form = document.getElementById("pick-form");
const topic = form.elements.topic;
const voice = form.elements.voice;
const language = form.elements.language;
const hint = document.getElementById("language-hint");
const topicDescriptions = JSON.parse(document.getElementById("topic-descriptions").textContent);
const description = document.getElementById("topic-description");

function fill(select, options) {
  const keep = select.value;
  select.replaceChildren(...options.map(([value, label]) => new Option(label, value)));
  if (options.some(([value]) => value === keep)) select.value = keep;
}

function describeTopic() {
  description.textContent = topicDescriptions[topic.value] || "";
}

function update() {
  describeTopic();
  const chosen = form.querySelector('input[name="provider"]:checked');
  const provider = catalogue.find((p) => chosen && p.key === chosen.value);
  if (!provider) return;
  const written = topicLanguages[topic.value] || [];
  const both = provider.languages.filter(([code]) => written.includes(code));
  fill(language, both);
  const topicName = topic.selectedOptions[0] ? topic.selectedOptions[0].text : "This topic";
  hint.textContent = both.length ? "" : `${topicName} is not written in any language ${provider.label} speaks.`;
  const offered = provider.voicesByLanguage[language.value] || [];
  fill(voice, provider.voices.filter(([key]) => offered.includes(key)));
}

form.addEventListener("change", (event) => {
  if (["provider", "topic", "language"].includes(event.target.name)) update();
});
update();
