import { test, expect } from "@playwright/test";
import { generatedImageTransfer, laneTiles, submitSlowJob, waitForLive } from "./helpers";

test("the dashboard lists the workers as alive", async ({ page }) => {
  await page.goto("/dashboard");
  await waitForLive(page);
  for (const id of ["e2e-worker-1", "e2e-worker-2"]) {
    await expect(page.locator("#workers tr.worker", { hasText: id })).toHaveAttribute("data-status", "alive");
  }
});

// scripts/test.sh starts a server whose tasks topic has one partition, with two workers.
const narrowBase = process.env.E2E_NARROW_BASE_URL;

test("with more workers alive than task partitions, the dashboard says how many get no tasks", async ({ page }) => {
  test.skip(!narrowBase, "needs the one-partition server scripts/test.sh starts");
  await page.goto(`${narrowBase}/dashboard`);
  await waitForLive(page);
  await expect(page.locator("#workers tr.worker[data-status=alive]")).toHaveCount(2);
  const warning = page.locator("#idle-workers");
  await expect(warning).toContainText("2 workers are alive, but the tasks topic has 1 partition");
  await expect(warning).toContainText("1 worker gets no tasks");
  await expect(warning).toHaveAttribute("role", "status");
});

test("each worker shows its CPU, memory and runtime, with sparklines that grow live", async ({ page }) => {
  await page.goto("/dashboard");
  await waitForLive(page);
  const row = page.locator("#workers tr.worker", { hasText: "e2e-worker-1" });
  await expect(row.locator(".runtime")).toHaveText(/^tilepipe-worker \d+\.\d+\.\d+ \(Rust\)$/);
  // Heartbeats come every second: CPU in percent, resident memory in MB.
  await expect(row.locator("td.cpu")).toHaveText(/^\s*\d+%\s*$/, { timeout: 15_000 });
  await expect(row.locator("td.rss")).toHaveText(/^\s*\d+(\.\d+)? MB\s*$/);
  // Each heartbeat adds a point to the sparklines; the page never reloads.
  const points = () => row.locator("td.rss polyline").getAttribute("points").then((p) => (p ?? "").split(" ").filter(Boolean).length);
  await expect.poll(points, { timeout: 15_000 }).toBeGreaterThanOrEqual(3);
});

test("a worker stopped mid-job stops getting bars in the task stream while the others go on, and turns lost", async ({
  page,
  context,
}) => {
  const pid = Number(process.env.E2E_LEAVING_WORKER_PID);
  test.skip(!pid, "needs the extra worker scripts/test.sh starts");
  test.setTimeout(240_000);
  const dashboard = await context.newPage();
  await dashboard.goto("/dashboard");
  await waitForLive(dashboard);
  const row = dashboard.locator("#workers tr.worker", { hasText: "e2e-worker-leaving" });
  await expect(row).toHaveAttribute("data-status", "alive");

  await page.goto("/");
  await waitForLive(page);
  const job = await submitSlowJob(page, "stream.png", 6144, 10);
  await page.goto(`/jobs/${job.id}`);
  await waitForLive(page);
  // A lane per worker, each getting bars.
  const others = async () => (await laneTiles(page, "#task-stream", "e2e-worker-1")) + (await laneTiles(page, "#task-stream", "e2e-worker-2"));
  await expect.poll(() => laneTiles(page, "#task-stream", "e2e-worker-leaving"), { timeout: 60_000 }).toBeGreaterThanOrEqual(2);
  await expect.poll(others).toBeGreaterThanOrEqual(2);

  process.kill(pid, "SIGTERM");
  const stopped = await laneTiles(page, "#task-stream", "e2e-worker-leaving");
  const before = await others();
  // What it had in hand and its replies already on the wire (a worker keeps
  // up to 8 unacknowledged) still arrive; after that it gets no more bars
  // while the others go on.
  await expect.poll(others, { timeout: 120_000 }).toBeGreaterThanOrEqual(before + 10);
  const settled = await laneTiles(page, "#task-stream", "e2e-worker-leaving");
  expect(settled).toBeLessThanOrEqual(stopped + 9);
  await expect.poll(others, { timeout: 120_000 }).toBeGreaterThanOrEqual(before + 30);
  expect(await laneTiles(page, "#task-stream", "e2e-worker-leaving")).toBe(settled);
  // The server's worker timeout is 3 s in scripts/test.sh; no reload.
  await expect(row).toHaveAttribute("data-status", "lost", { timeout: 30_000 });

  // Every tile is a bar, once.
  await expect(page.locator(".job-card")).toHaveAttribute("data-status", "done", { timeout: 180_000 });
  const lanes = await page.locator("#task-stream tr.lane").evaluateAll((rows) => rows.map((r) => Number(r.getAttribute("data-tiles"))));
  expect(lanes.reduce((a, b) => a + b, 0)).toBe(job.tiles_total);
  // The dashboard's stream shows the same tiles, from events; a reload
  // fills it again from the stored tiles.
  await expect.poll(() => laneTiles(dashboard, "#dashboard-stream", "e2e-worker-1")).toBeGreaterThan(0);
  await dashboard.reload();
  await waitForLive(dashboard);
  await expect.poll(() => laneTiles(dashboard, "#dashboard-stream", "e2e-worker-1")).toBeGreaterThan(0);
  await dashboard.close();
});

test("a job's operations and each worker's tiles/s show live on the dashboard", async ({ page, context }) => {
  await page.goto("/dashboard");
  await waitForLive(page);
  // Another tab submits a job with a chain; this one never reloads.
  const uploader = await context.newPage();
  await uploader.goto("/");
  await waitForLive(uploader);
  await uploader.locator("#op-kind").selectOption("grayscale");
  await uploader.locator("#op-add").click();
  const transfer = await generatedImageTransfer(uploader, 2048, 2048, "ops-column.png");
  await uploader.dispatchEvent("#dropzone", "drop", { dataTransfer: transfer });

  const row = page.locator("#jobs tr.job", { hasText: "ops-column.png" });
  await expect(row.locator("td.ops")).toHaveText("Gaussian blur 51×51 → Grayscale");
  await expect(row).toHaveAttribute("data-status", "done", { timeout: 90_000 });
  // Tiles arrived in the last seconds, so some worker has a rate above zero.
  await expect
    .poll(async () => (await page.locator("#workers td.rate").allTextContents()).map(Number).some((r) => r > 0))
    .toBe(true);
  await uploader.close();
});
