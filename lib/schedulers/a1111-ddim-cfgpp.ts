/**
 * A1111's "DDIM CFG++" (`a1111_ddim_cfgpp`): modules/sd_samplers_timesteps_impl.py `ddim_cfgpp`
 * (CFG++, Chung et al. 2024) as A1111 v1.10.1's CompVisSampler drives it. It is A1111's DDIM
 * (a1111-timesteps.ts: the same integer timesteps, tables, eta and img2img rule) with two changes,
 * both made through the CFGDenoiser it is handed (sd_samplers_cfg_denoiser.py):
 *
 * - `model.cond_scale_miltiplier = 1 / 12.5`: the guided eps is e = u + (g / 12.5)·(c − u);
 * - `model.need_last_noise_uncond = True`: the denoiser keeps the uncond half of its output,
 *   `last_noise_uncond` = u, and the step renoises with it:
 *   x ← √ᾱ_prev · (x − √(1 − ᾱ_t) · e) / √ᾱ_t + √(1 − ᾱ_prev − σ²) · u + σ · n.
 *
 * The executors guide with the request's own scale, m = u + g·(c − u), so the program writes
 * e = m / 12.5 + (1 − 1 / 12.5)·u (the same value) and reads u_j through the program's `d`
 * coefficient (lib/sampler/program.ts). A1111 runs the uncond at every scale, so the pipeline
 * evaluates it for this sampler even at guidance ≤ 1 (`samplerNeedsUncond`). Without an uncond
 * (a bare executor run) u = m, which is what A1111 hands the step when it skips the uncond.
 */
import { alphaTables, ddimStepScalars, timestepSamplerDefinition, type TimestepsContext } from "./a1111-timesteps.js";
import type { EvalRequest, EvalResult } from "./kdiffusion.js";

export const A1111_DDIM_CFGPP = "a1111_ddim_cfgpp" as const;
/** Its name in A1111 (sampler lists, infotext). */
export const A1111_DDIM_CFGPP_LABEL = "DDIM CFG++";

/** ddim_cfgpp's `model.cond_scale_miltiplier`: CFG scales [0, 12.5] become CFG++'s λ in [0, 1]. */
const CFGPP_SCALE_MULTIPLIER = 1 / 12.5;

/** sd_samplers_timesteps_impl.ddim_cfgpp. */
function* ddimCfgpp<V>(s: TimestepsContext<V>): Generator<EvalRequest<V>, V, EvalResult<V>> {
  const { la, timesteps } = s;
  const { alphas, alphasPrev, sqrtOneMinus } = alphaTables(s);
  let x = s.x;
  for (let i = 0; i < timesteps.length - 1; i++) {
    const index = timesteps.length - 1 - i;
    const r = yield [x, timesteps[index]!];
    // e_t with the scale times 1/12.5, from m = u + g·(c − u): u + (m − u)/12.5.
    const eps = la.combine([CFGPP_SCALE_MULTIPLIER, r.denoised], [1 - CFGPP_SCALE_MULTIPLIER, r.uncondDenoised]);
    const { sigma, toPrev, direction } = ddimStepScalars(s.eta, alphas[index]!, alphasPrev[index]!);
    // x = √ᾱ_prev · (x − √(1 − ᾱ_t) · e) / √ᾱ_t + √(1 − ᾱ_prev − σ²) · u + σ · n; n is drawn even when σ = 0.
    x = la.combine([toPrev, r.x], [-toPrev * sqrtOneMinus[index]!, eps], [direction, r.uncondDenoised], [sigma, s.noise()]);
  }
  return x;
}

export const A1111_DDIM_CFGPP_DEFINITION = timestepSamplerDefinition({ label: A1111_DDIM_CFGPP_LABEL, functionName: "ddim_cfgpp", body: ddimCfgpp, takesEta: true });

/**
 * Whether a scheduler's program reads the unconditional output (so the pipeline runs the uncond
 * half even where guidance ≤ 1 would turn it off, as A1111 does for every scale).
 */
export function samplerNeedsUncond(scheduler: string): boolean {
  return scheduler === A1111_DDIM_CFGPP;
}
