import { test, expect } from "@playwright/test";
import { submitSlowJob, waitForLive } from "./helpers";

test("a done job's result can be explored at full resolution in a deep-zoom viewer", async ({ page }) => {
  await page.goto("/");
  const job = await submitSlowJob(page, "zoom.png", 1024, 1);
  await page.goto(`/jobs/${job.id}`);
  await waitForLive(page);
  await expect(page.locator(".job-card")).toHaveAttribute("data-status", "done", { timeout: 90_000 });

  // Tiles of the full-size level (10: 2^10 = 1024) arrive once zoomed in.
  const fullSize = page.waitForResponse((r) => /\/zoom\/10\/\d+_\d+\.jpg$/.test(r.url()) && r.status() === 200);
  await page.locator("#explore").click();
  const viewer = page.locator("#zoom-viewer");
  // The viewer's own canvas (its navigator, in the corner, has another).
  const canvas = viewer.locator(".openseadragon-canvas").first();
  await expect(canvas).toBeVisible({ timeout: 30_000 });
  await expect(viewer).toHaveAttribute("aria-label", /1024×1024/);

  // The image is drawn: the middle of the canvas is the picture, not the
  // dark background.
  const middle = () =>
    canvas.locator("canvas").first().evaluate((c: HTMLCanvasElement) => {
      const [r, g, b] = c.getContext("2d")!.getImageData(c.width / 2, c.height / 2, 1, 1).data;
      return r + g + b > 3 * 40;
    });
  await expect.poll(middle, { timeout: 15_000 }).toBe(true);

  const box = (await viewer.boundingBox())!;
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  for (let i = 0; i < 6; i++) await page.mouse.wheel(0, -400);
  const tile = await fullSize;
  expect(tile.headers()["content-type"]).toBe("image/jpeg");
  await viewer.screenshot({ path: "screenshots/zoom-desktop.png" });
});
