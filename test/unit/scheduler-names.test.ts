/** AUTOMATIC1111 sampler names ↔ sd-trt scheduler names. */
import { describe, expect, test } from "@jest/globals";
import { KDIFFUSION_SAMPLER_NAMES, a1111SamplerName, a1111SamplerSelection, sigmaScheduleLabel } from "../../lib/schedulers/index.js";

describe("a1111SamplerName", () => {
  test.each([
    ["k_euler", "Euler"],
    ["k_euler_a", "Euler a"],
    ["k_lms", "LMS"],
    ["k_heun", "Heun"],
    ["k_dpm_2", "DPM2"],
    ["k_dpm_2_a", "DPM2 a"],
    ["k_dpmpp_2s_a", "DPM++ 2S a"],
    ["k_dpmpp_2m", "DPM++ 2M"],
    // diffusers' schedulers: the A1111 sampler closest to each (their infotext's Sampler field).
    ["pndm", "PLMS"],
    ["ddim", "DDIM"],
    ["euler", "Euler"],
    ["euler_a", "Euler a"],
    ["dpmpp_2m_karras", "DPM++ 2M Karras"],
    ["unipc", "UniPC"],
    ["ddpm", null],
  ] as const)("%s → %p", (name, a1111) => {
    expect(a1111SamplerName(name)).toBe(a1111);
  });

  test("every k-diffusion sampler's A1111 name selects it again", () => {
    for (const name of KDIFFUSION_SAMPLER_NAMES) {
      expect(a1111SamplerSelection(a1111SamplerName(name)!)).toEqual({ scheduler: name, sigmaSchedule: "automatic" });
    }
  });
});

describe("a1111SamplerSelection", () => {
  test("an A1111 name means A1111's k-diffusion sampler, with its schedule type", () => {
    expect(a1111SamplerSelection("Euler a")).toEqual({ scheduler: "k_euler_a", sigmaSchedule: "automatic" });
    expect(a1111SamplerSelection("DPM++ 2M", "Karras")).toEqual({ scheduler: "k_dpmpp_2m", sigmaSchedule: "karras" });
    expect(a1111SamplerSelection("DPM++ 2M", "Automatic")).toEqual({ scheduler: "k_dpmpp_2m", sigmaSchedule: "automatic" });
    expect(a1111SamplerSelection("Euler", "SGM Uniform")).toEqual({ scheduler: "k_euler", sigmaSchedule: "sgm_uniform" });
    expect(a1111SamplerSelection("Euler", "SGMUniform")).toEqual({ scheduler: "k_euler", sigmaSchedule: "sgm_uniform" });
  });

  test("pre-1.9 names: a schedule label at the end of the name is split off and wins, case-insensitively", () => {
    expect(a1111SamplerSelection("DPM++ 2M Karras")).toEqual({ scheduler: "k_dpmpp_2m", sigmaSchedule: "karras" });
    expect(a1111SamplerSelection("DPM++ 2M Karras", "Uniform")).toEqual({ scheduler: "k_dpmpp_2m", sigmaSchedule: "karras" });
    expect(a1111SamplerSelection("lms karras")).toEqual({ scheduler: "k_lms", sigmaSchedule: "karras" });
    expect(a1111SamplerSelection("euler a")).toEqual({ scheduler: "k_euler_a", sigmaSchedule: "automatic" });
  });

  test("Restart is A1111's restart_sampler, Karras by default", () => {
    expect(a1111SamplerSelection("Restart")).toEqual({ scheduler: "k_restart", sigmaSchedule: "automatic" });
    expect(a1111SamplerSelection("Restart", "Exponential")).toEqual({ scheduler: "k_restart", sigmaSchedule: "exponential" });
    expect(a1111SamplerName("k_restart")).toBe("Restart");
    expect(sigmaScheduleLabel("k_restart", "automatic")).toBe("Karras");
  });

  test("DDIM and PLMS are A1111's own, UniPC diffusers', and they take no schedule type", () => {
    expect(a1111SamplerSelection(" plms ")).toEqual({ scheduler: "a1111_plms" });
    expect(a1111SamplerSelection("DDIM", "Automatic")).toEqual({ scheduler: "a1111_ddim" });
    expect(a1111SamplerSelection("UniPC", "Karras")).toBeNull();
  });

  test("A1111's SDE samplers are its k-diffusion ones, the schedule suffix split off", () => {
    expect(a1111SamplerSelection("DPM++ SDE")).toEqual({ scheduler: "k_dpmpp_sde", sigmaSchedule: "automatic" });
    expect(a1111SamplerSelection("DPM++ 2M SDE Karras")).toEqual({ scheduler: "k_dpmpp_2m_sde", sigmaSchedule: "karras" });
    expect(a1111SamplerSelection("DPM++ 2M SDE Heun Exponential")).toEqual({ scheduler: "k_dpmpp_2m_sde_heun", sigmaSchedule: "exponential" });
    expect(a1111SamplerSelection("DPM++ 3M SDE")).toEqual({ scheduler: "k_dpmpp_3m_sde", sigmaSchedule: "automatic" });
  });

  test("samplers and schedule types sd-trt does not run give null", () => {
    expect(a1111SamplerSelection("DPM adaptive")).toBeNull();
    expect(a1111SamplerSelection("DPM adaptive Karras")).toBeNull();
    expect(a1111SamplerSelection("Euler", "Beta")).toBeNull();
    expect(a1111SamplerSelection("Euler", "no such schedule")).toBeNull();
    expect(a1111SamplerSelection("DDPM")).toBeNull();
  });
});
