import { test, expect } from "@playwright/test";
import * as fs from "fs";
import { generatedImageTransfer, pngSize, waitForLive } from "./helpers";

test("drop an image, watch it reach 100 %, download the result", async ({ page }) => {
  await page.goto("/");
  await waitForLive(page);

  const transfer = await generatedImageTransfer(page, 2048, 2048);
  await page.dispatchEvent("#dropzone", "drop", { dataTransfer: transfer });

  // Progress comes from the SSE stream and ends at 100 %.
  await expect(page.locator("#percent")).toBeVisible();
  await expect(page.locator("#percent")).toHaveText("100 %", { timeout: 90_000 });
  await expect(page.locator(".job-card")).toHaveAttribute("data-status", "done");

  const downloading = page.waitForEvent("download");
  await page.locator("#download").click();
  const download = await downloading;
  const file = await download.path();
  const bytes = fs.readFileSync(file!);
  expect(pngSize(bytes)).toEqual({ width: 2048, height: 2048 });
  expect(download.suggestedFilename()).toBe("generated-tilepipe.png");
});

test("an image below 1024x1024 is refused with the server's words", async ({ page }) => {
  await page.goto("/");
  await waitForLive(page);
  const transfer = await generatedImageTransfer(page, 640, 480, "tiny.png");
  await page.dispatchEvent("#dropzone", "drop", { dataTransfer: transfer });
  await expect(page.locator("#error")).toContainText("640x480");
  await expect(page.locator("#error")).toContainText("at least 1024x1024");
});
