/** What a caller may say about a checkpoint the files cannot tell (shared by the SD and SDXL single-file readers). */
export interface CheckpointOverrides {
  /** The scheduler's prediction type, when the detection's default is wrong for this model. */
  readonly predictionType?: "epsilon" | "v_prediction";
  /** Attention scores in fp32 (SD 2.1 768-v needs it in fp16). */
  readonly upcastAttention?: boolean;
}

export interface SingleFileOptions extends CheckpointOverrides {
  /** A diffusers folder whose configs describe the file (diffusers' `from_single_file(file, config=folder)`). */
  readonly configFolder?: string;
}
