/** The fleet: generation jobs on a BullMQ queue in Redis, run by `sd-trt worker` processes. */
export { createWorker, type FleetWorker, type FleetWorkerOptions } from "./worker.js";
export { RedisQueueClient, type FailedJob, type RedisQueueClientOptions } from "./client.js";
export { DEFAULT_QUEUE, FLEET_PROTOCOL, type FleetModel, type FleetJobData } from "./protocol.js";
export { listWorkers, type WorkerInfo } from "./redis.js";
