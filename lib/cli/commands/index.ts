/** Every `sd-trt` command, in the order `--help` lists them. */
import type { CommandModule } from "yargs";
import generate from "./generate.js";
import serve from "./serve.js";
import bench from "./bench.js";
import build from "./build.js";
import doctor from "./doctor.js";
import tokenize from "./tokenize.js";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [generate, serve, bench, build, doctor, tokenize];
