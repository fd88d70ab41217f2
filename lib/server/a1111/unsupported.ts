/**
 * The A1111 request fields this server does not implement, and when each may still be sent.
 *
 * A1111 clients send A1111's whole request model, usually with every field at its default (the
 * example body on A1111's `/docs` page is the usual starting point). The rule here:
 *
 * - a field whose value cannot change the picture here (saving options, comments, task ids,
 *   prompt styles when none are defined, …) is accepted whatever its value;
 * - a field that would change the picture is accepted only at a value where it does not: its
 *   A1111 default, `null`, or the placeholder of A1111's docs example (`"string"`, `0`) where
 *   A1111 itself treats that placeholder as "off";
 * - any other value is refused with a 422 naming the field, because we would otherwise return
 *   a picture that is not the one asked for.
 *
 * Two booleans of the docs example are `true` (`restore_faces`, `tiling`), so copying that body
 * sends them. `restore_faces: true` is what A1111 does with no face-restoration model installed
 * (it returns the image unchanged), which is this server's situation. `tiling: true` we cannot
 * honour; it is accepted (the docs body must work as it is) and reported as not honoured in the
 * `X-SD-TRT-Ignored` response header and in `info.sd_trt_ignored`.
 *
 * Unknown fields (not in A1111's model at all) are ignored, as A1111's pydantic models do.
 */
import { invalidField } from "../http/errors.js";
import { type Body, isAbsent, optionalArray, optionalBoolean, optionalNumber, optionalObject, optionalString } from "./fields.js";
import { DOCS_STRING_PLACEHOLDER, describeValue } from "./samplers.js";

/** Name-like strings that mean "none": A1111's own "none" spellings plus the docs placeholder. */
function isNoneName(value: string | null): boolean {
  return value === null || value === "" || value === "None" || value === "none" || value === DOCS_STRING_PLACEHOLDER;
}

function refuse(field: string, value: unknown, why: string): never {
  throw invalidField(field, `${field} ${why}; got ${describeValue(value)}`);
}

/** Fields whose value never changes the result here: checked for type only. */
function checkHarmless(body: Body): void {
  optionalBoolean(body, "do_not_save_samples");
  optionalBoolean(body, "do_not_save_grid");
  optionalBoolean(body, "save_images");
  optionalBoolean(body, "override_settings_restore_afterwards");
  optionalBoolean(body, "disable_extra_networks");
  optionalBoolean(body, "include_init_images");
  optionalObject(body, "comments");
  optionalString(body, "force_task_id");
  // Prompt styles are named templates kept by the server; with none defined, A1111 ignores
  // unknown style names, and so do we.
  const styles = optionalArray(body, "styles");
  styles?.forEach((style, i) => {
    if (typeof style !== "string") refuse(`styles[${i}]`, style, "must be a string");
  });
  // Script arguments only reach a script; with no script selected they are unused.
  optionalArray(body, "script_args");
}

export interface CompatContext {
  mode: "txt2img" | "img2img";
  /** Our scheduler name after sampler resolution. */
  scheduler: string;
}

/**
 * Checks every unsupported field. Returns the fields that were accepted with a value we did not
 * honour (see the module comment); throws a 422 for values that would change the result.
 */
/** A1111's ancestral k-diffusion samplers (they read eta and s_noise). */
const ANCESTRAL = ["k_euler_a", "k_dpm_2_a", "k_dpmpp_2s_a", "k_dpm_fast"];

export function checkUnsupportedFields(body: Body, context: CompatContext): string[] {
  const ignored: string[] = [];
  checkHarmless(body);

  // Face restoration: A1111 without a restoration model returns the image as it is.
  if (optionalBoolean(body, "restore_faces") === true) ignored.push("restore_faces");
  if (optionalBoolean(body, "tiling") === true) ignored.push("tiling");

  // Variation seeds, seed resize and ENSD: request.ts (a1111-noise.ts).

  // Sampler parameters.
  const eta = optionalNumber(body, "eta");
  if (eta !== null) {
    // A1111 passes eta only to ancestral samplers (default 1) and its DDIM (default 0); request.ts
    // passes it on to A1111's. diffusers' Euler a is eta 1 and diffusers' DDIM eta 0. Others ignore it.
    if (context.scheduler === "euler_a" && eta !== 1) refuse("eta", eta, "must be 1 or null with diffusers' euler_a (A1111's \"Euler a\" takes any eta)");
    if (context.scheduler === "ddim" && eta !== 0) refuse("eta", eta, "must be 0 or null with diffusers' ddim (A1111's \"DDIM\" takes any eta)");
  }
  const churn = optionalNumber(body, "s_churn");
  if (churn !== null && churn !== 0) refuse("s_churn", churn, "(stochastic churn) is not supported: send 0 or null");
  // s_tmin and s_tmax only gate the churn, which is off; s_noise also scales the ancestral
  // samplers' noise in k-diffusion, so it must be 1 there.
  optionalNumber(body, "s_tmin");
  optionalNumber(body, "s_tmax");
  const sNoise = optionalNumber(body, "s_noise");
  if (sNoise !== null && sNoise !== 1 && ANCESTRAL.includes(context.scheduler)) refuse("s_noise", sNoise, "must be 1 or null with the ancestral samplers (other values are not supported)");
  const minUncond = optionalNumber(body, "s_min_uncond");
  if (minUncond !== null && minUncond !== 0) refuse("s_min_uncond", minUncond, "(negative guidance minimum sigma) is not supported: send 0 or null");

  // Refiner.
  const refiner = optionalString(body, "refiner_checkpoint");
  if (!isNoneName(refiner)) refuse("refiner_checkpoint", refiner, "is not supported (this server runs one model): send null, \"\" or \"None\"");
  optionalNumber(body, "refiner_switch_at"); // unused without a refiner

  // Hires fix (txt2img): enable_hr and its fields are read in a1111-hires.ts.
  for (const field of ["firstphase_width", "firstphase_height"]) {
    const value = optionalNumber(body, field);
    // A1111's legacy hires fix changes the first-pass size whenever either is non-zero.
    if (value !== null && value !== 0) refuse(field, value, "(legacy hires fix) is not supported: send 0 or null");
  }
  const firstpass = optionalString(body, "firstpass_image");
  if (!isNoneName(firstpass)) refuse("firstpass_image", firstpass, "(hires fix first pass) is not supported: send null");
  // Scripts.
  const script = optionalString(body, "script_name");
  if (!isNoneName(script)) refuse("script_name", script, "is not supported (no scripts are installed): send null or \"\"");
  const alwayson = optionalObject(body, "alwayson_scripts");
  const alwaysonNames = alwayson ? Object.keys(alwayson) : [];
  if (alwaysonNames.length > 0) {
    refuse(`alwayson_scripts.${alwaysonNames[0]}`, alwayson![alwaysonNames[0]!], "is not supported (no scripts are installed): send {}");
  }

  // Infotext to apply: A1111 fills unset fields from it. We do not parse infotexts.
  const infotext = optionalString(body, "infotext");
  if (!isNoneName(infotext)) refuse("infotext", infotext, "(parameters from an infotext) is not supported: send the fields themselves");

  if (context.mode === "img2img") checkUnsupportedImg2ImgFields(body);
  else {
    // txt2img's denoising_strength is read only by the hires fix.
    optionalNumber(body, "denoising_strength");
  }
  return ignored;
}

function checkUnsupportedImg2ImgFields(body: Body): void {
  const mask = optionalString(body, "mask");
  if (!isNoneName(mask)) refuse("mask", mask, "(inpainting) is not supported: send null");
  const latentMask = optionalString(body, "latent_mask");
  if (!isNoneName(latentMask)) refuse("latent_mask", latentMask, "(inpainting) is not supported: send null");
  // Mask options are read only with a mask.
  for (const field of ["mask_blur", "mask_blur_x", "mask_blur_y", "inpainting_fill", "inpaint_full_res_padding", "inpainting_mask_invert"]) {
    optionalNumber(body, field);
  }
  const fullRes = body.inpaint_full_res;
  if (!isAbsent(fullRes) && typeof fullRes !== "boolean" && typeof fullRes !== "number") {
    refuse("inpaint_full_res", fullRes, "must be true, false, 0 or 1");
  }
  // Only instruct-pix2pix models read image_cfg_scale; A1111 sets it to None for others.
  optionalNumber(body, "image_cfg_scale");
  const noiseMultiplier = optionalNumber(body, "initial_noise_multiplier");
  if (noiseMultiplier !== null && noiseMultiplier !== 1) {
    refuse("initial_noise_multiplier", noiseMultiplier, "is not supported: send 1 or null");
  }
}
