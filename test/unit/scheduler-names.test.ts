/** AUTOMATIC1111 sampler names ↔ sd-trt scheduler names. */
import { describe, expect, test } from "@jest/globals";
import { SCHEDULER_NAMES, a1111SamplerName, schedulerFromA1111Name } from "../../lib/schedulers/index.js";

describe("a1111SamplerName", () => {
  test.each([
    ["pndm", "PLMS"],
    ["ddim", "DDIM"],
    ["euler", "Euler"],
    ["euler_a", "Euler a"],
    ["lms", "LMS"],
    ["heun", "Heun"],
    ["dpmpp_2m", "DPM++ 2M"],
    ["dpmpp_2m_karras", "DPM++ 2M Karras"],
    ["unipc", "UniPC"],
    ["ddpm", null],
  ] as const)("%s → %p", (name, a1111) => {
    expect(a1111SamplerName(name)).toBe(a1111);
  });

  test("every named sampler maps back to its scheduler", () => {
    for (const name of SCHEDULER_NAMES) {
      const a1111 = a1111SamplerName(name);
      if (a1111 !== null) expect(schedulerFromA1111Name(a1111)).toBe(name);
    }
  });
});

describe("schedulerFromA1111Name", () => {
  test("v1.9+ infotexts: the schedule type picks Karras for DPM++ 2M (its Automatic default)", () => {
    expect(schedulerFromA1111Name("DPM++ 2M", "Karras")).toBe("dpmpp_2m_karras");
    expect(schedulerFromA1111Name("DPM++ 2M", "Automatic")).toBe("dpmpp_2m_karras");
    expect(schedulerFromA1111Name("DPM++ 2M", "Uniform")).toBe("dpmpp_2m");
    expect(schedulerFromA1111Name("DPM++ 2M Karras", "Karras")).toBe("dpmpp_2m_karras");
  });

  test("pre-1.9 names without a schedule type, case-insensitively", () => {
    expect(schedulerFromA1111Name("DPM++ 2M")).toBe("dpmpp_2m");
    expect(schedulerFromA1111Name("euler a")).toBe("euler_a");
    expect(schedulerFromA1111Name(" plms ")).toBe("pndm");
    expect(schedulerFromA1111Name("Euler", "Automatic")).toBe("euler");
  });

  test("samplers or schedules sd-trt cannot reproduce give null", () => {
    expect(schedulerFromA1111Name("DPM++ SDE")).toBeNull();
    expect(schedulerFromA1111Name("Euler", "Karras")).toBeNull();
    expect(schedulerFromA1111Name("DPM++ 2M", "Exponential")).toBeNull();
    expect(schedulerFromA1111Name("DPM++ 2M Karras", "Uniform")).toBeNull();
    expect(schedulerFromA1111Name("DDPM")).toBeNull();
  });
});
