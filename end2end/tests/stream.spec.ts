import { test, expect } from "@playwright/test";
import { laneTiles, submitSlowJob, waitForLive } from "./helpers";

declare global {
  interface Window {
    __opened: number;
    __latencies: number[];
  }
}

test("a running job's rate matches its own progress, and each tile shows within moments of reaching the master", async ({
  page,
}) => {
  test.setTimeout(240_000);
  // How long after its result reached the master (the tile's done_at, by
  // the master's clock, on this machine) each tile turns done on the page.
  await page.addInitScript(() => {
    window.__opened = Date.now();
    window.__latencies = [];
    new MutationObserver((records) => {
      const now = Date.now();
      for (const r of records) {
        const doneAt = Number((r.target as Element).getAttribute("data-done-at"));
        if (doneAt >= window.__opened) window.__latencies.push(now - doneAt);
      }
    }).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-done-at"] });
  });
  await page.goto("/");
  await waitForLive(page);
  const job = await submitSlowJob(page, "rates.png", 6656, 10);
  await page.goto(`/jobs/${job.id}`);
  await waitForLive(page);
  await expect(page.locator("#task-stream canvas.stream")).toBeVisible();

  // The job's own numbers over 10 s while it runs, against the page's rate
  // "over the last 10 s" at the end of them.
  const done = async () => (await (await page.request.get(`/api/jobs/${job.id}`)).json()).tiles_done as number;
  await expect.poll(done, { timeout: 60_000 }).toBeGreaterThan(0);
  const [from, started] = [await done(), Date.now()];
  await page.waitForTimeout(10_000); // a measured interval, not a wait for an event
  const shown = Number(await page.locator("#job-tiles-per-second").textContent());
  const [to, ended] = [await done(), Date.now()];
  expect(to, "the job is still running").toBeLessThan(job.tiles_total);
  const own = (to - from) / ((ended - started) / 1000);
  console.log(`job rate: page ${shown.toFixed(1)} tiles/s, API ${own.toFixed(1)} tiles/s`);
  expect(Math.abs(shown - own) / own).toBeLessThan(0.2);
  await expect(page.locator("#job-mb-per-second")).not.toHaveText("0.0");
  for (const [name, size] of [
    ["desktop", { width: 1440, height: 1000 }],
    ["phone", { width: 390, height: 844 }],
  ] as const) {
    await page.setViewportSize(size);
    await page.screenshot({ path: `screenshots/job-running-${name}.png`, fullPage: true });
  }
  await page.setViewportSize({ width: 1280, height: 720 });

  await expect(page.locator(".job-card")).toHaveAttribute("data-status", "done", { timeout: 180_000 });
  // The stages line up on the same axis once known.
  for (const stage of ["decode", "dispatch", "processing", "collect", "encode"]) {
    await expect(page.locator(`#task-stream .stage-row[data-stage="${stage}"]`)).toHaveCount(1);
  }
  await page.screenshot({ path: "screenshots/job-done-desktop.png", fullPage: true });
  const latencies = (await page.evaluate(() => window.__latencies)).sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
  console.log(`tile event latency, master to page: p50 ${at(0.5)} ms, p95 ${at(0.95)} ms over ${latencies.length} tiles`);
  // Every tile done while the page was open was shown, and none before its result arrived.
  const workers = ["e2e-worker-1", "e2e-worker-2"];
  const inStream = (await Promise.all(workers.map((w) => laneTiles(page, "#task-stream", w)))).reduce((a, b) => a + b, 0);
  expect(inStream).toBe(job.tiles_total);
  expect(latencies.length).toBeGreaterThan(job.tiles_total / 2);
  expect(latencies[0]).toBeGreaterThanOrEqual(0);

  // The keyboard walks the bars in time order, naming each; so does the pointer.
  const stream = page.locator("#task-stream canvas.stream");
  await stream.focus();
  await page.keyboard.press("ArrowRight");
  await expect(page.locator("#task-stream .tip")).toHaveText(/^tile \d+ · e2e-worker-[12] · \d+ ms/);
  await expect(page.locator("#task-stream [role=status]")).toHaveText(/^tile \d+/);
  await page.keyboard.press("Escape");
  await expect(page.locator("#task-stream .tip")).toHaveCount(0);
  // Along the first lane until the pointer meets a bar, once the previews
  // above have loaded (the stream stays where it was measured).
  for (const img of await page.locator(".compare img").all()) {
    await expect.poll(() => img.evaluate((i: HTMLImageElement) => i.complete)).toBe(true);
  }
  const box = (await stream.boundingBox())!;
  for (let x = 2; x < box.width; x += 3) {
    await page.mouse.move(box.x + x, box.y + 5);
    if ((await page.locator("#task-stream .tip").count()) > 0) break;
  }
  await expect(page.locator("#task-stream .tip")).toHaveText(/^tile \d+ · e2e-worker-/);
});
