/**
 * Redis connections for the fleet, and the worker registry.
 *
 * BullMQ needs `maxRetriesPerRequest: null` on its connections (its blocking commands must wait
 * through a reconnect rather than fail). ioredis reconnects on its own after Redis restarts, and
 * re-subscribes pub/sub channels; every connection gets an `error` listener, because an
 * EventEmitter's unhandled `error` would end the process while Redis is briefly away.
 *
 * Registry: each worker keeps `sd-trt:fleet:<queue>:worker:<id>` alive (a JSON `WorkerInfo`,
 * refreshed every `HEARTBEAT_MS`, expiring after `WORKER_TTL_MS`), so front ends learn which model
 * the fleet serves and its limits without loading it, and see a dead worker disappear. A Redis
 * restart empties the registry; the next heartbeat fills it again.
 */
import { Redis } from "ioredis";
import { InvalidOptionError } from "../errors.js";
import type { BackendLimits, BackendName } from "../backends/backend.js";
import { type FleetModel, keyPrefix } from "./protocol.js";

export const HEARTBEAT_MS = 2000;
/**
 * A registration outlives five missed heartbeats: a worker whose event loop is slow for a few
 * seconds on a loaded machine must not vanish from the front ends (which would answer 503).
 */
export const WORKER_TTL_MS = 5 * HEARTBEAT_MS;

/** What a worker publishes about itself. */
export interface WorkerInfo {
  id: string;
  host: string;
  pid: number;
  protocol: number;
  model: FleetModel & { dir: string };
  backend: BackendName;
  limits: BackendLimits;
  devices: number[];
  startedAt: string;
  /** The textual-inversion embeddings its prompts can use (`--embeddings-dir`); absent from workers that predate it. */
  embeddings?: { name: string; count: number }[];
}

/** Checks a Redis URL early, naming the option, instead of letting ioredis retry a typo forever. */
export function checkRedisUrl(url: string, option = "redis"): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new InvalidOptionError(option, `${option} must be a redis:// or rediss:// URL, got ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") {
    throw new InvalidOptionError(option, `${option} must be a redis:// or rediss:// URL, got ${JSON.stringify(url)}`);
  }
  return url;
}

/** Queue names become part of Redis keys: keep them to one safe token. */
export function checkQueueName(name: string, option = "queue"): string {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name)) {
    throw new InvalidOptionError(option, `${option} must be 1 to 64 letters, digits, '_', '.' or '-', got ${JSON.stringify(name)}`);
  }
  return name;
}

/** A connection for BullMQ and the registry. `onError` sees connection errors (logged, not fatal). */
export function connectRedis(url: string, onError: (error: Error) => void): Redis {
  const redis = new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true, lazyConnect: false });
  redis.on("error", onError);
  return redis;
}

/** Live workers of a queue (those whose heartbeat has not expired). */
export async function listWorkers(redis: Redis, queue: string): Promise<WorkerInfo[]> {
  const keys: string[] = [];
  let cursor = "0";
  do {
    const [next, batch] = await redis.scan(cursor, "MATCH", `${keyPrefix(queue)}:worker:*`, "COUNT", 200);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== "0");
  if (keys.length === 0) return [];
  const values = await redis.mget(...keys);
  return values.flatMap((v) => {
    if (v === null) return [];
    try {
      return [JSON.parse(v) as WorkerInfo];
    } catch {
      return [];
    }
  });
}
