/** Where `--model <checkpoint>` conversions go by default: the platform's per-user cache folder. */
import { join } from "node:path";
import { describe, expect, test } from "@jest/globals";
import { defaultModelCacheDir } from "../../lib/package-info.js";

describe("the default model cache folder", () => {
  test("$SDTRT_CACHE_DIR wins everywhere", () => {
    expect(defaultModelCacheDir({ SDTRT_CACHE_DIR: "/data/sd", XDG_CACHE_HOME: "/x" }, "linux", "/home/u")).toBe("/data/sd");
  });

  test("Linux: $XDG_CACHE_HOME/sd-trt/models, else ~/.cache/sd-trt/models", () => {
    expect(defaultModelCacheDir({ XDG_CACHE_HOME: "/x" }, "linux", "/home/u")).toBe(join("/x", "sd-trt", "models"));
    expect(defaultModelCacheDir({}, "linux", "/home/u")).toBe(join("/home/u", ".cache", "sd-trt", "models"));
  });

  test("macOS: ~/Library/Caches; Windows: %LOCALAPPDATA%", () => {
    expect(defaultModelCacheDir({}, "darwin", "/Users/u")).toBe(join("/Users/u", "Library", "Caches", "sd-trt", "models"));
    expect(defaultModelCacheDir({ LOCALAPPDATA: "C:/Users/u/AppData/Local" }, "win32", "C:/Users/u")).toBe(join("C:/Users/u/AppData/Local", "sd-trt", "cache", "models"));
  });
});
