import { test, expect } from "@playwright/test";
import { waitForLive } from "./helpers";

test("the dashboard lists both workers as alive", async ({ page }) => {
  await page.goto("/dashboard");
  await waitForLive(page);
  const workers = page.locator("#workers tr.worker");
  await expect(workers).toHaveCount(2);
  await expect(page.locator('#workers tr.worker[data-status="alive"]')).toHaveCount(2);
  await expect(page.locator("#workers")).toContainText("e2e-worker-1");
  await expect(page.locator("#workers")).toContainText("e2e-worker-2");
});
