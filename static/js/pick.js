// Voices and languages follow the chosen provider. The server validates again.
const catalogue = JSON.parse(document.getElementById("provider-catalogue").textContent);
const form = document.getElementById("pick-form");
const voice = form.elements.voice;
const language = form.elements.language;

function fill(select, options) {
  const keep = select.value;
  select.replaceChildren(...options.map(([value, label]) => new Option(label, value)));
  if (options.some(([value]) => value === keep)) select.value = keep;
}

function update() {
  const chosen = form.querySelector('input[name="provider"]:checked');
  const provider = catalogue.find((p) => chosen && p.key === chosen.value);
  if (!provider) return;
  fill(language, provider.languages);
  const offered = provider.voicesByLanguage[language.value] || [];
  fill(voice, provider.voices.filter(([key]) => offered.includes(key)));
}

form.addEventListener("change", (event) => {
  if (event.target.name === "provider" || event.target.name === "language") update();
});
update();
