/** Every `sd-trt` command, in the order `--help` lists them. */
import type { CommandModule } from "yargs";
import tokenize from "./tokenize.js";
import doctor from "./doctor.js";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [tokenize, doctor];
