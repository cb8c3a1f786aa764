import { test, expect } from "@playwright/test";
import { waitForLive } from "./helpers";

// Screenshots of each page at desktop and phone widths, kept under
// end2end/screenshots/ for a person to look at (the job page's is taken by
// upload.spec.ts once its job is done).
for (const [name, size] of [
  ["desktop", { width: 1280, height: 900 }],
  ["phone", { width: 390, height: 844 }],
] as const) {
  test(`pages render at ${name} width`, async ({ page }) => {
    await page.setViewportSize(size);
    for (const [path, file] of [
      ["/", "upload"],
      ["/dashboard", "dashboard"],
    ]) {
      await page.goto(path);
      await waitForLive(page);
      await expect(page.locator("main, body").first()).toBeVisible();
      // Nothing wider than the screen.
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      expect(overflow).toBeLessThanOrEqual(1);
      await page.screenshot({ path: `screenshots/${file}-${name}.png`, fullPage: true });
    }
  });
}
