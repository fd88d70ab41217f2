/** The service layer: a queueing, batching, cancellable PipelineService over a Pipeline. */
export {
  PipelineService,
  type PipelineServiceOptions,
  type ServiceCallOptions,
  type ServiceCounters,
  type ServiceRequest,
  type ServiceResult,
} from "./pipeline-service.js";
export { BusyError, ServiceClosedError } from "../errors.js";
export type { RunningState } from "./batching-queue.js";
export type { DeviceCounters, GenerationService } from "./generation-service.js";
