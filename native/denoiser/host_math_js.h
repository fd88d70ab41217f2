// JS entry points of the host paths (host_math.h). Synchronous on purpose: they are test and
// diagnostic helpers working on small arrays, not production calls; they copy their inputs' values
// and return new arrays (no borrowed memory outlives the call).
#pragma once

#include <napi.h>

namespace sdtrt::host {

// Adds hostRunProgram, hostVaeToUint8, hostFloatToHalf, hostHalfToFloat to `exports`.
void RegisterHostMath(Napi::Env env, Napi::Object exports);

}  // namespace sdtrt::host
