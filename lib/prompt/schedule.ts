/**
 * A1111's prompt editing and alternation: `get_learned_conditioning_prompt_schedules` of
 * modules/prompt_parser.py (AUTOMATIC1111/stable-diffusion-webui@82a973c04367123ae98bd9abdf80d9eda9b910e2):
 * which text the prompt is at each sampling step, of the first pass or of hires fix's second pass.
 *
 * - `[from:to:when]` is `from` up to step `when`, then `to`; `[to:when]` adds `to` after `when`;
 *   `[from::when]` removes `from` after `when`. `when` with a "." is a fraction of the steps
 *   (`int(when · steps)`), without one a step number; the result is capped at `steps`.
 * - `[a|b|c]` alternates a, b, c, a, … one step at a time (an empty option is the empty text).
 * - `(…)`, `(…:…)` and `[…]` are kept as written (the attention parser reads them later), and
 *   brackets that close nothing stay as text.
 * - A prompt A1111's grammar cannot parse (a `|` outside `[…|…]`, a lone trailing `\`) is used as
 *   written for every step.
 *
 * The result is A1111's list of `[endAtStep, text]`: the text holds for every evaluation index
 * j (0-based, one per model evaluation, as A1111's CFGDenoiser counts) with j ≤ endAtStep, the first
 * such entry winning (`reconstruct_cond_batch`).
 *
 * A1111 parses with a lark grammar (Earley). This is a recursive-descent reading of the same
 * grammar that prefers, at the top level, a bracket construct over stray bracket characters, as
 * lark's rule order does; the goldens (test/fixtures/goldens/a1111_prompt_schedules.json) compare
 * it with A1111's own function on A1111's doctests and on generated prompts.
 */

/** One entry of a prompt's schedule: the text up to and including evaluation `endAtStep`. */
export type ScheduleEntry = [endAtStep: number, text: string];

type Node =
  | { kind: "text"; text: string }
  | { kind: "scheduled"; before: Node[] | null; after: Node[]; when: string }
  | { kind: "alternate"; options: (Node[] | null)[] };

class ParseError extends Error {}

// Python's str.isspace() characters: lark's WHITESPACE is /\s+/ in Python's re.
// biome-ignore lint/suspicious/noControlCharactersInRegex: Python's whitespace includes the control characters \x1c-\x1f
const SPACE = /[\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/u;
// lark's common.SIGNED_NUMBER: ["+"|"-"] (FLOAT | INT), FLOAT = INT _EXP | DECIMAL _EXP?, DECIMAL = INT "." INT? | "." INT.
const SIGNED_NUMBER = /^[+-]?(?:(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+)/;

class Parser {
  readonly #text: string;
  #pos = 0;
  constructor(text: string) {
    this.#text = text;
  }

  /** `!start: (prompt | /[][():]/+)*`: stray brackets and colons stay as text. */
  parseStart(): Node[] {
    const out: Node[] = [];
    while (this.#pos < this.#text.length) {
      const before = this.#pos;
      out.push(...this.#prompt());
      if (this.#pos < this.#text.length && this.#pos === before) {
        const ch = this.#text[this.#pos]!;
        if (ch === "|" || ch === "\\") throw new ParseError(); // nothing in the grammar takes it here
        out.push({ kind: "text", text: ch }); // "(", "[", ")", "]" or ":" that starts or closes nothing
        this.#pos++;
      }
    }
    return out;
  }

  /** `prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*`. */
  #prompt(): Node[] {
    const out: Node[] = [];
    for (;;) {
      const ch = this.#text[this.#pos];
      if (ch === undefined) return out;
      if (ch === "[" || ch === "(") {
        const start = this.#pos;
        const construct = ch === "[" ? this.#squareConstruct() : this.#roundConstruct();
        if (construct === null) {
          this.#pos = start;
          return out;
        }
        out.push(...construct);
        continue;
      }
      const plain = this.#plain();
      if (plain === "") return out;
      out.push({ kind: "text", text: plain });
    }
  }

  /** `plain: /([^\\\[\]():|]|\\.)+/` (whitespace is plain too). */
  #plain(): string {
    const start = this.#pos;
    for (;;) {
      const ch = this.#text[this.#pos];
      if (ch === undefined || "[]():|".includes(ch)) break;
      if (ch === "\\") {
        if (this.#pos + 1 >= this.#text.length) break; // a lone trailing backslash: no terminal matches it
        this.#pos += 1 + (this.#text.codePointAt(this.#pos + 1)! > 0xffff ? 2 : 1);
        continue;
      }
      this.#pos++;
    }
    return this.#text.slice(start, this.#pos);
  }

  #eat(ch: string): boolean {
    if (this.#text[this.#pos] !== ch) return false;
    this.#pos++;
    return true;
  }

  #whitespace(): string {
    const start = this.#pos;
    while (this.#pos < this.#text.length && SPACE.test(this.#text[this.#pos]!)) this.#pos++;
    return this.#text.slice(start, this.#pos);
  }

  /** `"(" prompt ")" | "(" prompt ":" prompt ")"`, kept as written. */
  #roundConstruct(): Node[] | null {
    this.#eat("(");
    const first = this.#prompt();
    if (this.#eat(")")) return [{ kind: "text", text: "(" }, ...first, { kind: "text", text: ")" }];
    if (!this.#eat(":")) return null;
    const second = this.#prompt();
    if (!this.#eat(")")) return null;
    return [{ kind: "text", text: "(" }, ...first, { kind: "text", text: ":" }, ...second, { kind: "text", text: ")" }];
  }

  /** `"[" prompt "]"` (kept as written), `scheduled` or `alternate`. */
  #squareConstruct(): Node[] | null {
    this.#eat("[");
    const first = this.#prompt();
    if (this.#eat("]")) return [{ kind: "text", text: "[" }, ...first, { kind: "text", text: "]" }];
    if (this.#text[this.#pos] === "|") {
      const options: (Node[] | null)[] = [first];
      while (this.#eat("|")) {
        const option = this.#prompt();
        options.push(option.length > 0 ? option : null);
      }
      return this.#eat("]") ? [{ kind: "alternate", options }] : null;
    }
    if (!this.#eat(":")) return null;
    // `"[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"`: first [to:when], then [from:to:when].
    const afterColon = this.#pos;
    const when = this.#number();
    if (when !== null) return [{ kind: "scheduled", before: null, after: first, when }];
    this.#pos = afterColon;
    const second = this.#prompt();
    if (!this.#eat(":")) return null;
    const when2 = this.#number();
    return when2 === null ? null : [{ kind: "scheduled", before: first, after: second, when: when2 }];
  }

  /** `[WHITESPACE] NUMBER [WHITESPACE] "]"`: the number's text, or null. */
  #number(): string | null {
    this.#whitespace();
    const m = SIGNED_NUMBER.exec(this.#text.slice(this.#pos));
    if (!m) return null;
    this.#pos += m[0].length;
    this.#whitespace();
    return this.#eat("]") ? m[0] : null;
  }
}

/**
 * How a `when` maps to a step of the pass (`CollectSteps.scheduled`): `steps` of this pass and, in
 * hires fix's second pass, the offsets that make the first pass's steps count first (a whole
 * `when` less the first pass's steps; a fraction less 1, so 1.5 is half way through the second pass).
 */
interface StepScale {
  steps: number;
  intOffset: number;
  floatOffset: number;
}

/** The step a `when` stands for: capped at `steps`, truncated toward 0. */
function stepOf(when: string, scale: StepScale): number {
  const v = Number(when);
  return Math.min(scale.steps, Math.trunc(when.includes(".") ? (v - scale.floatOffset) * scale.steps : v - scale.intOffset));
}

function collectSteps(nodes: Node[], scale: StepScale, out: Set<number>): void {
  const { steps } = scale;
  for (const node of nodes) {
    if (node.kind === "scheduled") {
      const step = stepOf(node.when, scale);
      if (step >= 1) out.add(step);
      if (node.before) collectSteps(node.before, scale, out);
      collectSteps(node.after, scale, out);
    } else if (node.kind === "alternate") {
      for (let s = 1; s <= steps; s++) out.add(s);
      for (const option of node.options) if (option) collectSteps(option, scale, out);
    }
  }
}

function textAt(nodes: Node[], step: number, scale: StepScale): string {
  let out = "";
  for (const node of nodes) {
    if (node.kind === "text") out += node.text;
    else if (node.kind === "scheduled") {
      const part = step <= stepOf(node.when, scale) ? node.before : node.after;
      if (part) out += textAt(part, step, scale);
    } else {
      const option = node.options[(step - 1) % node.options.length];
      if (option) out += textAt(option, step, scale);
    }
  }
  return out;
}

/**
 * A1111's schedule of one prompt for `steps` sampling steps: `[[endAtStep, text], …]`, the last
 * entry ending at `steps`. A prompt without editing or alternation is `[[steps, prompt]]`.
 * With `hiresSteps` (A1111's `hires_steps`), the schedule of hires fix's second pass: `steps` is
 * then the first pass's, and the schedule spans the second pass's `hiresSteps`.
 */
export function promptSchedule(prompt: string, steps: number, hiresSteps?: number): ScheduleEntry[] {
  const scale: StepScale = hiresSteps === undefined ? { steps, intOffset: 0, floatOffset: 0 } : { steps: hiresSteps, intOffset: steps, floatOffset: 1 };
  let tree: Node[];
  try {
    tree = new Parser(prompt).parseStart();
  } catch (error) {
    if (error instanceof ParseError) return [[scale.steps, prompt]];
    throw error;
  }
  const stepSet = new Set<number>([scale.steps]);
  collectSteps(tree, scale, stepSet);
  return [...stepSet].sort((a, b) => a - b).map((t) => [t, textAt(tree, t, scale)]);
}

/** The entry of a schedule that evaluation `evalIndex` (0-based) uses: the first with evalIndex ≤ endAtStep, else the first. */
export function scheduleIndexAt(schedule: readonly (readonly [endAtStep: number, ...rest: unknown[]])[], evalIndex: number): number {
  const index = schedule.findIndex(([end]) => evalIndex <= end);
  return Math.max(0, index);
}

/**
 * The text each image uses at evaluation `evalIndex` (A1111's `reconstruct_cond_batch`): its
 * schedule's entry there, or `rowOf` when no prompt changes. Both backends switch with it.
 */
export function textsAt(prompts: { rowOf: Int32Array; schedules?: ReadonlyArray<ReadonlyArray<readonly [number, number]>> }, evalIndex: number): ArrayLike<number> {
  if (!prompts.schedules) return prompts.rowOf;
  return prompts.schedules.map((schedule) => schedule[scheduleIndexAt(schedule, evalIndex)]![1]);
}
