/**
 * The web page of `sd-trt serve` (served at /). It speaks only the server's public A1111 API —
 * txt2img, progress, interrupt, samplers, sd-models — so it works the same in front of local
 * pipelines and in front of a worker fleet (`serve --redis`).
 *
 * The token: the page itself holds no data, and every API call it makes carries
 * `Authorization: Bearer <token>`. When the server answers 401, the page shows the token form
 * instead of the generator; the token is kept in sessionStorage (this tab only).
 */

interface A1111Response {
  images: string[];
  info: string;
}
interface A1111Info {
  all_seeds: number[];
  infotexts: string[];
}
interface ErrorBody {
  error?: string;
  detail?: string;
}
/** What made an image: enough to put it back in the form ("copy to prompt"). */
interface Made {
  prompt: string;
  negative_prompt: string;
  sampler_name: string;
  steps: number;
  cfg_scale: number;
  width: number;
  height: number;
  seed: number;
}

const TOKEN_KEY = "sd-trt-token";
/** How often the progress bar asks the server while a generation runs (ms). */
const PROGRESS_POLL_MS = 200;

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found as T;
}

const ui = {
  app: element<HTMLElement>("app"),
  model: element<HTMLElement>("model"),
  tokenForm: element<HTMLFormElement>("token-form"),
  token: element<HTMLInputElement>("token"),
  tokenError: element<HTMLElement>("token-error"),
  form: element<HTMLFormElement>("generate-form"),
  prompt: element<HTMLTextAreaElement>("prompt"),
  negative: element<HTMLTextAreaElement>("negative"),
  sampler: element<HTMLSelectElement>("sampler"),
  steps: element<HTMLInputElement>("steps"),
  cfg: element<HTMLInputElement>("cfg"),
  width: element<HTMLInputElement>("width"),
  height: element<HTMLInputElement>("height"),
  batch: element<HTMLInputElement>("batch"),
  seedFixed: element<HTMLInputElement>("seed-fixed"),
  seedRandom: element<HTMLInputElement>("seed-random"),
  seed: element<HTMLInputElement>("seed"),
  generate: element<HTMLButtonElement>("generate"),
  interrupt: element<HTMLButtonElement>("interrupt"),
  bar: element<HTMLElement>("progress-bar"),
  status: element<HTMLElement>("status"),
  gallery: element<HTMLElement>("gallery"),
  card: element<HTMLTemplateElement>("card-template"),
};

class Unauthorized extends Error {}

async function api<T>(path: string, init: RequestInit = {}): Promise<{ status: number; body: T }> {
  const headers = new Headers(init.headers);
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.set("Authorization", `Bearer ${token}`);
  if (init.body) headers.set("Content-Type", "application/json");
  const response = await fetch(path, { ...init, headers });
  if (response.status === 401) {
    const body = (await response.json().catch(() => ({}))) as ErrorBody;
    showTokenForm(token ? (body.detail ?? "the token was refused") : "");
    throw new Unauthorized(body.detail ?? "unauthorized");
  }
  return { status: response.status, body: (await response.json()) as T };
}

function showTokenForm(error: string): void {
  ui.app.hidden = true;
  ui.tokenForm.hidden = false;
  ui.tokenError.textContent = error;
  ui.token.focus();
}

function setStatus(text: string, isError = false): void {
  ui.status.textContent = text;
  ui.status.classList.toggle("error", isError);
}

function setProgress(fraction: number): void {
  const percent = Math.round(Math.max(0, Math.min(1, fraction)) * 100);
  ui.bar.style.width = `${percent}%`;
  ui.bar.setAttribute("aria-valuenow", String(percent));
}

/** Loads what the form offers; shows the generator once the server accepts us. */
async function start(): Promise<void> {
  try {
    const models = await api<Array<{ model_name: string; hash: string | null }>>("/sdapi/v1/sd-models");
    const samplers = await api<Array<{ name: string }>>("/sdapi/v1/samplers");
    const first = models.body[0];
    ui.model.textContent = first ? `model ${first.model_name}${first.hash ? ` [${first.hash}]` : ""}` : "";
    ui.sampler.replaceChildren(...samplers.body.map((s) => new Option(s.name, s.name, s.name === "Euler", s.name === "Euler")));
    ui.tokenForm.hidden = true;
    ui.app.hidden = false;
  } catch (error) {
    if (!(error instanceof Unauthorized)) setStatus(`cannot reach the server: ${String(error)}`, true);
  }
}

function readForm(): Made & { batch_size: number } {
  const fixed = ui.seedFixed.checked;
  return {
    prompt: ui.prompt.value,
    negative_prompt: ui.negative.value,
    sampler_name: ui.sampler.value,
    steps: Number(ui.steps.value),
    cfg_scale: Number(ui.cfg.value),
    width: Number(ui.width.value),
    height: Number(ui.height.value),
    batch_size: Number(ui.batch.value),
    // A1111: −1 asks the server for a random seed; the response reports the one it drew.
    seed: fixed ? Number(ui.seed.value) : -1,
  };
}

async function generate(): Promise<void> {
  const request = readForm();
  ui.generate.disabled = true;
  ui.interrupt.disabled = false;
  setStatus("generating…");
  setProgress(0);
  let polling = true;
  const poll = async () => {
    while (polling) {
      try {
        const { body } = await api<{ progress: number }>("/sdapi/v1/progress");
        if (polling) setProgress(body.progress);
      } catch {
        // The generation request reports what went wrong.
      }
      await new Promise((resolve) => setTimeout(resolve, PROGRESS_POLL_MS));
    }
  };
  const poller = poll();
  try {
    const { status, body } = await api<A1111Response & ErrorBody>("/sdapi/v1/txt2img", { method: "POST", body: JSON.stringify(request) });
    if (status === 200) {
      const info = JSON.parse(body.info) as A1111Info;
      for (const [i, png] of body.images.entries()) addCard(png, { ...request, seed: info.all_seeds[i] ?? request.seed }, info.infotexts[i] ?? "");
      setProgress(1);
      setStatus(`done: ${body.images.length} image(s), seed ${info.all_seeds.join(", ")}`);
    } else if (status === 409) {
      setProgress(0);
      setStatus("interrupted");
    } else {
      setStatus(`${body.error ?? status}: ${body.detail ?? ""}`, true);
    }
  } catch (error) {
    if (!(error instanceof Unauthorized)) setStatus(String(error), true);
  } finally {
    polling = false;
    await poller;
    ui.generate.disabled = false;
    ui.interrupt.disabled = true;
  }
}

function addCard(png: string, made: Made, infotext: string): void {
  const card = ui.card.content.firstElementChild?.cloneNode(true) as HTMLElement;
  const url = `data:image/png;base64,${png}`;
  const img = card.querySelector("img")!;
  img.src = url;
  img.alt = made.prompt;
  card.querySelector(".seed")!.textContent = `Seed: ${made.seed}`;
  card.querySelector(".infotext")!.textContent = infotext;
  const download = card.querySelector<HTMLAnchorElement>("a.download")!;
  download.href = url;
  download.download = `sd-trt-${made.seed}.png`;
  card.querySelector<HTMLButtonElement>("button.use")!.addEventListener("click", () => copyToForm(made));
  ui.gallery.prepend(card);
}

/** Puts an image's parameters back in the form, with its seed fixed, to make it again or vary it. */
function copyToForm(made: Made): void {
  ui.prompt.value = made.prompt;
  ui.negative.value = made.negative_prompt;
  ui.sampler.value = made.sampler_name;
  ui.steps.value = String(made.steps);
  ui.cfg.value = String(made.cfg_scale);
  ui.width.value = String(made.width);
  ui.height.value = String(made.height);
  ui.batch.value = "1";
  ui.seed.value = String(made.seed);
  ui.seedFixed.checked = true;
  ui.seedRandom.checked = false;
  ui.prompt.focus();
}

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  void generate();
});
ui.interrupt.addEventListener("click", () => {
  void api("/sdapi/v1/interrupt", { method: "POST" }).catch(() => undefined);
});
ui.seed.addEventListener("input", () => {
  ui.seedFixed.checked = true;
});
ui.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, ui.token.value);
  void start();
});

ui.app.hidden = true;
void start();
