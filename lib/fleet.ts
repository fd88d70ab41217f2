/**
 * sd-trt/fleet: many machines behind one queue. `createWorker` runs jobs from a BullMQ queue in
 * Redis on a PipelineService; `RedisQueueClient` sends requests to it (and is what
 * `sd-trt serve --redis` serves). A tier of its own so that BullMQ loads only where used.
 * Deployment: docs/scale-out.md.
 */
export * from "./fleet/index.js";
