/**
 * Summary statistics for benchmark samples. Percentiles use linear interpolation between the
 * closest ranks (numpy's default `percentile` method), so p50 of an even count is the mean of
 * the middle two.
 */

export interface Summary {
  count: number;
  mean: number;
  min: number;
  max: number;
  p50: number;
  p90: number;
  p99: number;
}

/** The q-th percentile (0 ≤ q ≤ 100) of already sorted values. */
export function percentileOfSorted(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = (q / 100) * (sorted.length - 1);
  const low = Math.floor(rank);
  const high = Math.ceil(rank);
  const fraction = rank - low;
  return sorted[low]! + (sorted[high]! - sorted[low]!) * fraction;
}

export function summarize(values: readonly number[]): Summary {
  const sorted = [...values].sort((a, b) => a - b);
  const count = sorted.length;
  const mean = count === 0 ? Number.NaN : sorted.reduce((s, v) => s + v, 0) / count;
  return {
    count,
    mean,
    min: count ? sorted[0]! : Number.NaN,
    max: count ? sorted[count - 1]! : Number.NaN,
    p50: percentileOfSorted(sorted, 50),
    p90: percentileOfSorted(sorted, 90),
    p99: percentileOfSorted(sorted, 99),
  };
}

export function mean(values: readonly number[]): number {
  return values.length === 0 ? Number.NaN : values.reduce((s, v) => s + v, 0) / values.length;
}
