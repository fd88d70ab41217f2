/**
 * A1111's settings this server honours, with one validator for both ways of setting them: the
 * server-wide options (`GET`/`POST /sdapi/v1/options`) and a request's `override_settings`, which
 * apply on top of the server's for that request only (as in A1111).
 *
 * | setting                    | values                                      | A1111 default |
 * | -------------------------- | ------------------------------------------- | ------------- |
 * | `randn_source`             | "GPU" (= "NV" here), "NV", "CPU"            | "GPU"         |
 * | `emphasis`                 | "Original", "No norm", "Ignore", "None"     | "Original"    |
 * | `comma_padding_backtrack`  | 0 … 74                                      | 20            |
 * | `pad_cond_uncond`          | true / false                                | false         |
 * | `CLIP_stop_at_last_layers` | 1 … 12 (clip skip; the model's layer count) | 1             |
 * | `sdxl_clip_l_skip`         | true / false (clip skip on SDXL's CLIP-L)   | false         |
 * | `eta_noise_seed_delta`     | 0 … 2^53 − 1 (ENSD)                         | 0             |
 * | `sd_model_checkpoint`      | the served model's name                     |               |
 * | `sd_vae`                   | "Automatic", "None"                         | "Automatic"   |
 * | `enable_pnginfo`           | true                                        | true          |
 * | `uni_pc_variant`           | "bh1", "bh2", "vary_coeff" (A1111's UniPC)  | "bh1"         |
 * | `uni_pc_skip_type`         | "time_uniform", "time_quadratic", "logSNR"  | "time_uniform"|
 * | `uni_pc_order`             | 1 … 15 (A1111's slider: 50)                 | 3             |
 * | `uni_pc_lower_order_final` | true / false                                | true          |
 * | `no_dpmpp_sde_batch_determinism` | false                                 | false         |
 *
 * Options that only affect saving files, the UI or logging are accepted and ignored; any other
 * key is a 422 naming it, so nothing that would change the picture is silently dropped.
 */
import { invalidField } from "../http/errors.js";
import { describeValue } from "./samplers.js";
import { A1111_EMPHASIS_NAMES, MAX_COMMA_PADDING_BACKTRACK, type Emphasis } from "../../prompt/index.js";
import { A1111_UNI_PC_DEFAULTS, UNI_PC_SKIP_TYPES, UNI_PC_VARIANTS, type A1111UniPcSettings } from "../../schedulers/index.js";

export interface A1111Settings extends A1111UniPcSettings {
  randn_source: "GPU" | "NV" | "CPU";
  emphasis: string;
  comma_padding_backtrack: number;
  pad_cond_uncond: boolean;
  CLIP_stop_at_last_layers: number;
  sdxl_clip_l_skip: boolean;
  eta_noise_seed_delta: number;
  sd_model_checkpoint: string;
  sd_vae: string;
  enable_pnginfo: boolean;
}

/** A1111's defaults (modules/shared_options.py) for a server running `modelName`. */
export function defaultA1111Settings(modelName: string): A1111Settings {
  return {
    randn_source: "GPU",
    emphasis: "Original",
    comma_padding_backtrack: 20,
    pad_cond_uncond: false,
    CLIP_stop_at_last_layers: 1,
    sdxl_clip_l_skip: false,
    eta_noise_seed_delta: 0,
    sd_model_checkpoint: modelName,
    sd_vae: "Automatic",
    enable_pnginfo: true,
    ...A1111_UNI_PC_DEFAULTS,
  };
}

/** `override_settings` / options keys that only affect saving files, the UI or logging. */
const HARMLESS_SETTINGS = new Set([
  "samples_save", "grid_save", "samples_format", "grid_format", "save_to_dirs", "grid_save_to_dirs",
  "save_images_before_face_restoration", "save_images_before_highres_fix", "save_images_before_color_correction",
  "save_init_img", "outdir_samples", "outdir_txt2img_samples", "outdir_img2img_samples", "outdir_grids",
  "outdir_txt2img_grids", "outdir_img2img_grids", "outdir_save", "save_txt", "export_for_4chan",
  "live_previews_enable", "show_progress_every_n_steps", "show_progressbar", "return_grid",
  "add_model_hash_to_info", "add_model_name_to_info", "add_version_to_infotext", "add_user_name_to_info",
]);

const EMPHASIS_BY_A1111_NAME = new Map(Object.entries(A1111_EMPHASIS_NAMES).map(([ours, theirs]) => [theirs, ours as Emphasis]));

/** Our emphasis mode for A1111's name of it. */
export function emphasisOf(settings: A1111Settings): Emphasis {
  return EMPHASIS_BY_A1111_NAME.get(settings.emphasis) ?? "original";
}

/**
 * `base` with `changes` applied, each checked. `prefix` names the body field in messages
 * ("override_settings." or "" for /sdapi/v1/options). A null value leaves a setting as it is.
 * @throws HttpError 422 naming the first key or value that cannot be honoured.
 */
export function applyA1111Settings(base: A1111Settings, changes: Record<string, unknown>, prefix: string): A1111Settings {
  const out = { ...base };
  for (const [key, value] of Object.entries(changes)) {
    const field = `${prefix}${key}`;
    if (HARMLESS_SETTINGS.has(key) || value === null) continue;
    switch (key) {
      case "randn_source":
        if (value !== "GPU" && value !== "NV" && value !== "CPU") throw invalidField(field, `${field} must be "GPU", "NV" or "CPU", got ${describeValue(value)}`);
        out.randn_source = value;
        break;
      case "emphasis":
        if (typeof value !== "string" || !EMPHASIS_BY_A1111_NAME.has(value)) {
          throw invalidField(field, `${field} must be one of ${[...EMPHASIS_BY_A1111_NAME.keys()].map((n) => JSON.stringify(n)).join(", ")}, got ${describeValue(value)}`);
        }
        out.emphasis = value;
        break;
      case "comma_padding_backtrack":
        if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > MAX_COMMA_PADDING_BACKTRACK) {
          throw invalidField(field, `${field} must be an integer from 0 to ${MAX_COMMA_PADDING_BACKTRACK}, got ${describeValue(value)}`);
        }
        out.comma_padding_backtrack = value;
        break;
      case "pad_cond_uncond":
        if (typeof value !== "boolean") throw invalidField(field, `${field} must be true or false, got ${describeValue(value)}`);
        out.pad_cond_uncond = value;
        break;
      case "sdxl_clip_l_skip":
        if (typeof value !== "boolean") throw invalidField(field, `${field} must be true or false, got ${describeValue(value)}`);
        out.sdxl_clip_l_skip = value;
        break;
      case "CLIP_stop_at_last_layers":
        // A1111's slider range; the model's own layer count is checked with the request (validateClipSkip).
        if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 12) {
          throw invalidField(field, `${field} (clip skip) must be an integer from 1 to 12, got ${describeValue(value)}`);
        }
        out.CLIP_stop_at_last_layers = value;
        break;
      case "eta_noise_seed_delta":
        if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
          throw invalidField(field, `${field} (ENSD) must be an integer from 0 to ${Number.MAX_SAFE_INTEGER} or null, got ${describeValue(value)}`);
        }
        out.eta_noise_seed_delta = value;
        break;
      case "sd_model_checkpoint":
        if (value !== base.sd_model_checkpoint) {
          throw invalidField(field, `${field} must be ${JSON.stringify(base.sd_model_checkpoint)} (the only model this server runs) or null, got ${describeValue(value)}`);
        }
        break;
      case "sd_vae":
        if (value !== "Automatic" && value !== "None") throw invalidField(field, `${field} must be "Automatic", "None" or null (this server runs the model's own VAE), got ${describeValue(value)}`);
        out.sd_vae = value;
        break;
      case "enable_pnginfo":
        if (value !== true) throw invalidField(field, `${field} must be true or null (images always carry their parameters), got ${describeValue(value)}`);
        break;
      case "uni_pc_variant":
      case "uni_pc_skip_type": {
        const allowed: readonly string[] = key === "uni_pc_variant" ? UNI_PC_VARIANTS : UNI_PC_SKIP_TYPES;
        if (typeof value !== "string" || !allowed.includes(value)) {
          throw invalidField(field, `${field} must be one of ${allowed.map((n) => JSON.stringify(n)).join(", ")}, got ${describeValue(value)}`);
        }
        (out as Record<string, unknown>)[key] = value;
        break;
      }
      case "uni_pc_order":
        // Order k keeps k + 1 steps of history; sd-trt's executors hold 16.
        if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 15) {
          throw invalidField(field, `${field} must be an integer from 1 to 15 (A1111 allows 50; sd-trt's executors keep 16 steps of history), got ${describeValue(value)}`);
        }
        out.uni_pc_order = value;
        break;
      case "uni_pc_lower_order_final":
        if (typeof value !== "boolean") throw invalidField(field, `${field} must be true or false, got ${describeValue(value)}`);
        out.uni_pc_lower_order_final = value;
        break;
      case "no_dpmpp_sde_batch_determinism":
        // true hands k-diffusion no noise sampler: its own then seeds the tree from torch's unseeded global generator.
        if (value !== false) throw invalidField(field, `${field} must be false or null: with it A1111 seeds the SDE samplers' noise from torch's unseeded global generator, which cannot be reproduced; got ${describeValue(value)}`);
        break;
      default:
        throw invalidField(field, `${field} is not a setting this server can apply; remove it or see the README for the supported settings`);
    }
  }
  return out;
}
