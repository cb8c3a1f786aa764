import { test, expect } from "@playwright/test";
import * as fs from "fs";
import { generatedImageTransfer, pngColourType, pngSize, waitForLive } from "./helpers";

test("drop an image, watch it reach 100 %, download the result", async ({ page }) => {
  await page.goto("/");
  await waitForLive(page);

  // A slow uplink, so the byte-accurate upload progress can be seen.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false,
    latency: 0,
    downloadThroughput: -1,
    uploadThroughput: 256 * 1024,
  });
  const transfer = await generatedImageTransfer(page, 2048, 2048);
  await page.dispatchEvent("#dropzone", "drop", { dataTransfer: transfer });
  // The browser previews the file with its size while it goes up.
  await expect(page.locator("#preview figcaption")).toContainText("2048×2048");
  await expect(page.locator("#upload-bytes")).toHaveText(/ of /);
  await expect(page.locator(".uploading [role=progressbar]")).toHaveAttribute("aria-valuenow", /\d+/);
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false,
    latency: 0,
    downloadThroughput: -1,
    uploadThroughput: -1,
  });

  // Progress comes from the SSE stream and ends at 100 %.
  await expect(page.locator("#percent")).toBeVisible();
  await expect(page.locator("#percent")).toHaveText("100 %", { timeout: 90_000 });
  await expect(page.locator(".job-card")).toHaveAttribute("data-status", "done");

  // Every tile of the map turned done, coloured by its worker; hovering names it.
  const map = page.locator("#tile-map");
  await expect(map).toHaveAttribute("data-tiles", "16");
  await expect(map).toHaveAttribute("data-done", "16");
  await expect(map).toHaveAttribute("aria-label", "Tile map: 4 by 4 tiles, 16 done, 0 processing");
  const mapBox = (await map.boundingBox())!;
  await map.hover({ position: { x: mapBox.width * 0.9, y: mapBox.height * 0.9 } });
  await expect(page.locator(".tile-map-wrap .tip")).toHaveText(/^tile 15: done by e2e-worker-\S+ in [\d.]+ ms$/);
  // Drawn: the last tile is in its worker's colour, not the queued one.
  const drawn = () =>
    map.evaluate((c: HTMLCanvasElement) => {
      const [r, g, b] = c.getContext("2d")!.getImageData(c.width * 0.9, c.height * 0.9, 1, 1).data;
      const queued = getComputedStyle(c).color.match(/\d+/g)!.map(Number);
      return Math.abs(r - queued[0]) + Math.abs(g - queued[1]) + Math.abs(b - queued[2]) > 30;
    });
  await expect.poll(drawn).toBe(true);
  // Before and after, from previews that fit the page, with the elapsed
  // time, throughput and stages.
  await expect(page.locator(".compare img.after")).toBeVisible();
  for (const which of ["before", "after"]) {
    const img = page.locator(`.compare img.${which}`);
    await expect(img).toHaveAttribute("src", /\/preview\/(input|result)$/);
    await expect.poll(() => img.evaluate((i: HTMLImageElement) => i.complete && i.naturalWidth)).toBe(2048);
  }
  await expect(page.locator("#status")).toContainText("MP/s");
  await expect(page.locator('#task-stream .stage-row[data-stage="decode"]')).toHaveCount(1);
  await expect(page.locator("#first-task")).toHaveText(/^\d+ ms$/);
  // The task stream has a bar per tile, over the workers' lanes.
  const bars = () => page.locator("#task-stream tr.lane").evaluateAll((rows) => rows.reduce((n, r) => n + Number(r.getAttribute("data-tiles")), 0));
  await expect.poll(bars).toBe(16);
  await page.screenshot({ path: "screenshots/job-desktop.png", fullPage: true });

  // The job has its own URL: a reload shows the same state.
  await expect(page).toHaveURL(/\/jobs\/[0-9a-f-]{36}$/);
  await page.reload();
  await waitForLive(page);
  await expect(page.locator("#percent")).toHaveText("100 %");
  await expect(page.locator(".job-card")).toHaveAttribute("data-status", "done");
  await expect(page.locator("#tile-map")).toHaveAttribute("data-done", "16");
  await expect.poll(bars).toBe(16);

  const downloading = page.waitForEvent("download");
  await page.locator("#download").click();
  const download = await downloading;
  const file = await download.path();
  const bytes = fs.readFileSync(file!);
  expect(pngSize(bytes)).toEqual({ width: 2048, height: 2048 });
  expect(download.suggestedFilename()).toBe("generated-tilepipe.png");
});

test("a custom chain runs, and the finished job can be deleted from the dashboard", async ({ page }) => {
  await page.goto("/");
  await waitForLive(page);

  // Replace the default blur with grayscale then a 9x9 blur.
  await page.getByRole("button", { name: "Remove Gaussian blur 51×51" }).click();
  await expect(page.locator("#chain li")).toHaveCount(0);
  await page.locator("#op-kind").selectOption("grayscale");
  await page.locator("#op-add").click();
  await page.locator("#op-kind").selectOption("gaussian_blur");
  await page.locator("#op-size").fill("9");
  await page.locator("#op-add").click();
  await expect(page.locator("#chain li span")).toHaveText(["Grayscale", "Gaussian blur 9×9"]);
  // The result as a JPEG of quality 80.
  await page.locator("#output-format").selectOption("jpeg");
  await page.locator("#output-quality").fill("80");

  const transfer = await generatedImageTransfer(page, 1100, 1024, "chain.png");
  await page.dispatchEvent("#dropzone", "drop", { dataTransfer: transfer });
  await expect(page.locator("#percent")).toHaveText("100 %", { timeout: 90_000 });
  await expect(page.locator(".job-card .ops")).toHaveText("Grayscale → Gaussian blur 9×9");
  await expect(page.locator(".job-head")).toContainText("JPEG q80");
  const result = await page.request.get(`/api/jobs/${page.url().split("/").pop()}/result`);
  expect(result.headers()["content-type"]).toBe("image/jpeg");
  expect((await result.body()).subarray(0, 3).toString("hex")).toBe("ffd8ff");

  await page.getByRole("link", { name: "Dashboard" }).click();
  const row = page.locator("#jobs tr.job", { hasText: "chain.png" });
  await expect(row).toHaveAttribute("data-status", "done");
  await row.getByRole("button", { name: "Delete chain.png" }).click();
  await expect(row).toHaveCount(0);
});

test("the same image again is answered from the cache, and says so", async ({ page }) => {
  await page.goto("/");
  await waitForLive(page);
  const first = await generatedImageTransfer(page, 1536, 1024, "twice.png");
  await page.dispatchEvent("#dropzone", "drop", { dataTransfer: first });
  await expect(page.locator("#percent")).toHaveText("100 %", { timeout: 90_000 });
  await expect(page.locator("#cached")).toHaveCount(0);
  await expect(page.locator("#tile-map")).toHaveAttribute("data-done", "6");
  const source = page.url().split("/").pop();

  await page.getByRole("link", { name: "Process another image" }).click();
  await waitForLive(page);
  const again = await generatedImageTransfer(page, 1536, 1024, "twice-again.png");
  await page.dispatchEvent("#dropzone", "drop", { dataTransfer: again });
  await expect(page.locator("#percent")).toHaveText("100 %");
  await expect(page.locator("#cached")).toContainText("result cache");
  await expect(page.locator("#cached a")).toHaveAttribute("href", `/jobs/${source}`);
  await expect(page.locator("#tile-map")).toHaveCount(0);
  await expect(page.locator(".compare img.after")).toBeVisible();
});

test("an invalid step is refused with the parameter's name", async ({ page }) => {
  await page.goto("/");
  await waitForLive(page);
  await page.locator("#op-size").fill("50");
  await page.locator("#op-add").click();
  const transfer = await generatedImageTransfer(page, 1024, 1024, "even.png");
  await page.dispatchEvent("#dropzone", "drop", { dataTransfer: transfer });
  await expect(page.locator("#error")).toContainText("gaussian_blur.kernel must be an odd number");
});

test("an image below 1024x1024 is refused with the server's words", async ({ page }) => {
  await page.goto("/");
  await waitForLive(page);
  const transfer = await generatedImageTransfer(page, 640, 480, "tiny.png");
  await page.dispatchEvent("#dropzone", "drop", { dataTransfer: transfer });
  await expect(page.locator("#error")).toContainText("640x480");
  await expect(page.locator("#error")).toContainText("at least 1024x1024");
});

test("an image pasted from the clipboard is previewed with its size and runs", async ({ page }) => {
  await page.goto("/");
  await waitForLive(page);
  const transfer = await generatedImageTransfer(page, 1280, 1024, "pasted.png");
  await page.evaluate((data) => {
    document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true }));
  }, transfer);
  await expect(page).toHaveURL(/\/jobs\/[0-9a-f-]{36}$/);
  await expect(page.locator(".job-card")).toHaveAttribute("data-status", "done", { timeout: 90_000 });
  await expect(page.locator("h1")).toHaveText("pasted.png");
});

test("a file that is not an image is refused before it is sent", async ({ page }) => {
  await page.goto("/");
  await waitForLive(page);
  const transfer = await page.evaluateHandle(() => {
    const data = new DataTransfer();
    data.items.add(new File(["just words"], "notes.txt", { type: "text/plain" }));
    return data;
  });
  const uploads: string[] = [];
  page.on("request", (r) => r.method() === "POST" && uploads.push(r.url()));
  await page.dispatchEvent("#dropzone", "drop", { dataTransfer: transfer });
  await expect(page.locator("#error")).toContainText("notes.txt is not an image (text/plain)");
  expect(uploads).toHaveLength(0);
});

test("a transparent image keeps its alpha through the pipeline; an opaque one is sent as RGB", async ({ page }) => {
  for (const [name, transparent, colourType] of [
    ["see-through.png", true, 6],
    ["opaque.png", false, 2],
  ] as const) {
    await page.goto("/");
    await waitForLive(page);
    const transfer = await generatedImageTransfer(page, 1024, 1024, name, transparent);
    await page.dispatchEvent("#dropzone", "drop", { dataTransfer: transfer });
    await expect(page.locator(".job-card")).toHaveAttribute("data-status", "done", { timeout: 90_000 });
    const result = await page.request.get(`/api/jobs/${page.url().split("/").pop()}/result`);
    const bytes = await result.body();
    expect(pngSize(bytes)).toEqual({ width: 1024, height: 1024 });
    expect(pngColourType(bytes)).toBe(colourType);
  }
});
