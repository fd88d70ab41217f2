/**
 * Euler ancestral: an Euler step down to σ_down followed by fresh noise of size σ_up, where
 * σ_up² + σ_down² = σ_next² splits the next noise level between "deterministic" and "ancestral"
 * parts (k-diffusion's `sample_euler_ancestral` with eta = 1). Follows diffusers'
 * src/diffusers/schedulers/scheduling_euler_ancestral_discrete.py
 * (EulerAncestralDiscreteScheduler) at 58eb52c: one noise draw on every step, the last one
 * included (σ_up = 0 there, but the generator still advances).
 */
import { ZERO_SNR, type ConfigSpec } from "./config.js";
import { defineScheduler } from "./define.js";
import { div32, mul32, sqrt32, square32, sub32 } from "./float32.js";
import {
  SIGMA_FAMILY_KEYS,
  SigmaRun,
  sigmaAddNoise,
  sigmaPlan,
  spacedSigmas,
  withFinalSigma,
  type SigmaFamilyConfig,
  type SigmaPlan,
} from "./sigma-family.js";
import type { SchedulerDefinition } from "./types.js";

export interface EulerAncestralConfig extends SigmaFamilyConfig {
  rescale_betas_zero_snr: false;
}

const CLASS = "EulerAncestralDiscreteScheduler";

const SPEC: ConfigSpec<EulerAncestralConfig> = {
  ...SIGMA_FAMILY_KEYS,
  rescale_betas_zero_snr: ZERO_SNR,
};

/** σ_up and σ_down for a step σ_from → σ_to, in float32 as diffusers computes them. */
export function ancestralSplit(sigmaFrom: number, sigmaTo: number): { up: number; down: number } {
  const fromSq = square32(sigmaFrom);
  const toSq = square32(sigmaTo);
  // (σ_to² · (σ_from² − σ_to²) / σ_from²) ** 0.5
  const up = sqrt32(div32(mul32(toSq, sub32(fromSq, toSq)), fromSq));
  const down = sqrt32(sub32(toSq, square32(up)));
  return { up, down };
}

class EulerAncestralRun<V> extends SigmaRun<EulerAncestralConfig, V> {
  step(modelOutput: V, sample: V, drawNoise: () => V): V {
    const { la, plan } = this;
    const i = this.index;
    const sigma = plan.sigmas[i]!;
    const { up, down } = ancestralSplit(sigma, plan.sigmas[i + 1]!);
    const d = this.slope(sigma, sample, modelOutput);
    const dt = sub32(down, sigma);
    const noise = drawNoise();
    this.index++;
    return la.combine([1, sample], [dt, d], [up, noise]);
  }
}

export const eulerAncestral: SchedulerDefinition<EulerAncestralConfig, SigmaPlan> = defineScheduler({
  className: CLASS,
  order: 1,
  spec: SPEC,
  plan(config, steps) {
    const { timesteps, sigmas } = spacedSigmas(CLASS, config, steps);
    return sigmaPlan(config, timesteps, withFinalSigma(sigmas, 0));
  },
  Run: EulerAncestralRun,
  addNoise: sigmaAddNoise,
});
