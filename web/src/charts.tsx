// Live charts of the last minutes on the server page, drawn by uPlot (a small canvas time-series
// library) from samples the page collects while it polls /metrics.
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

/** How far back the charts look: samples older than this are dropped. */
export const WINDOW_S = 300;

/** One model's samples, oldest first: `t` in seconds since the epoch, one value per series per t
 * (null where a value is undefined, e.g. a hit rate while no prompt arrived). */
export interface History {
  t: number[];
  tokensPerSecond: number[];
  queueDepth: number[];
  hitRate: (number | null)[];
}

export function emptyHistory(): History {
  return { t: [], tokensPerSecond: [], queueDepth: [], hitRate: [] };
}

/** The history with one more sample, and without those older than WINDOW_S before it. */
export function appendSample(
  h: History,
  t: number,
  sample: { tokensPerSecond: number; queueDepth: number; hitRate: number | null },
): History {
  const keepFrom = h.t.findIndex((at) => at >= t - WINDOW_S);
  const from = keepFrom < 0 ? h.t.length : keepFrom;
  return {
    t: [...h.t.slice(from), t],
    tokensPerSecond: [...h.tokensPerSecond.slice(from), sample.tokensPerSecond],
    queueDepth: [...h.queueDepth.slice(from), sample.queueDepth],
    hitRate: [...h.hitRate.slice(from), sample.hitRate],
  };
}

interface ChartProps {
  name: string; // data-chart, for tests and styles
  label: string;
  unit: string;
  t: number[];
  values: (number | null)[];
  max?: number; // a fixed top of the y axis (100 for a percentage); otherwise it follows the data
}

/** A line chart over the last WINDOW_S seconds, with the latest and the peak value in its caption. */
export function LiveChart({ name, label, unit, t, values, max }: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);

  useEffect(() => {
    if (!box.current) return;
    const width = Math.max(240, Math.min(420, box.current.clientWidth || 320));
    plot.current = new uPlot(
      {
        width,
        height: 120,
        legend: { show: false },
        cursor: { show: false },
        scales: { x: { time: true }, y: { range: (_u, lo, hi) => [0, max ?? Math.max(1, hi, lo)] } },
        axes: [{ size: 28 }, { size: 40 }],
        series: [{}, { label, stroke: "#2563eb", width: 2, fill: "rgba(37, 99, 235, 0.12)", spanGaps: true }],
      },
      [[], []],
      box.current,
    );
    return () => {
      plot.current?.destroy();
      plot.current = null;
    };
  }, [label, max]);

  useEffect(() => {
    plot.current?.setData([t, values]);
  }, [t, values]);

  const known = values.filter((v): v is number => v !== null);
  const now = known.length ? known[known.length - 1] : null;
  const peak = known.length ? Math.max(...known) : null;
  const shown = (v: number | null) => (v === null ? "–" : `${v.toFixed(1)}${unit}`);
  return (
    <figure class="chart" data-chart={name} data-peak={peak ?? ""} aria-label={`${label}, last ${WINDOW_S / 60} minutes`}>
      <figcaption>
        {label}: now {shown(now)} · peak {shown(peak)}
      </figcaption>
      <div ref={box} />
    </figure>
  );
}
