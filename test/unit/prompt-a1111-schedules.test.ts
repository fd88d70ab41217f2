/**
 * A1111's prompt editing and alternation schedules against test/fixtures/goldens/a1111_prompt_schedules.json
 * (A1111's own get_learned_conditioning_prompt_schedules on its doctest prompts, hand-picked edge
 * cases and 300 generated prompts; scripts/reference/a1111_prompt_schedules.py), compared exactly.
 */
import { readFileSync } from "node:fs";
import { describe, expect, test } from "@jest/globals";
import { promptSchedule, scheduleIndexAt, type ScheduleEntry } from "../../lib/prompt/index.js";

interface Golden {
  group: string;
  prompt: string;
  steps: number;
  schedule: ScheduleEntry[];
}

const goldens = JSON.parse(readFileSync(new URL("../fixtures/goldens/a1111_prompt_schedules.json", import.meta.url), "utf8")) as { cases: Golden[] };

describe("prompt schedules are A1111's", () => {
  test("the fixture holds A1111's doctests, hand-picked cases and 300 generated prompts", () => {
    const count = (group: string) => goldens.cases.filter((c) => c.group === group).length;
    expect([count("doctest"), count("fuzz")]).toEqual([14, 300]);
  });

  test.each(goldens.cases.filter((c) => c.group !== "fuzz").map((c) => [`${JSON.stringify(c.prompt)} (${c.steps} steps)`, c] as const))("%s", (_name, golden) => {
    expect(promptSchedule(golden.prompt, golden.steps)).toEqual(golden.schedule);
  });

  test("the 300 generated prompts", () => {
    const wrong = goldens.cases.filter((c) => c.group === "fuzz" && JSON.stringify(promptSchedule(c.prompt, c.steps)) !== JSON.stringify(c.schedule));
    expect(wrong.map((c) => c.prompt)).toEqual([]);
  });
});

describe("which entry an evaluation uses (A1111's reconstruct_cond_batch)", () => {
  test("evaluation j (0-based) takes the first entry with j ≤ endAtStep; past the last, the first again", () => {
    const schedule = promptSchedule("a [dog:cat:3]", 10);
    expect(schedule).toEqual([[3, "a dog"], [10, "a cat"]]);
    expect([0, 1, 2, 3, 4, 9, 10, 11].map((j) => scheduleIndexAt(schedule, j))).toEqual([0, 0, 0, 0, 1, 1, 1, 0]);
  });
});

describe("hires fix's second pass (A1111's hires_steps)", () => {
  test("A1111's doctests: a fraction below 1 belongs to the first pass, 1.5 is half way through the second", () => {
    // modules/prompt_parser.py's doctests with g = get_learned_conditioning_prompt_schedules([p], 10, 10).
    expect(promptSchedule("a [b:.5] c", 10, 10)).toEqual([[10, "a b c"]]);
    expect(promptSchedule("a [b:1.5] c", 10, 10)).toEqual([[5, "a  c"], [10, "a b c"]]);
  });

  test("a whole-number `when` counts the first pass's steps first; alternation restarts at the second pass's step 1", () => {
    expect(promptSchedule("a [b:c:13]", 10, 6)).toEqual([[3, "a b"], [6, "a c"]]);
    expect(promptSchedule("a [b:c:4]", 10, 6)).toEqual([[6, "a c"]]);
    expect(promptSchedule("[x|y]", 10, 3)).toEqual([[1, "x"], [2, "y"], [3, "x"]]);
  });
});
