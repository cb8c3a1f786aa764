import { test, expect } from "@playwright/test";
import { expectAccessible, generatedImageTransfer, laneTiles, submitSlowJob, waitForLive } from "./helpers";

for (const scheme of ["light", "dark"] as const) {
  test(`the upload page and the dashboard pass axe in ${scheme} mode`, async ({ page }) => {
    await page.emulateMedia({ colorScheme: scheme });
    await page.goto("/");
    await waitForLive(page);
    await expectAccessible(page);
    await page.goto("/dashboard");
    await waitForLive(page);
    await expectAccessible(page);
  });
}

test("a finished job's page, with its timeline, passes axe in both schemes", async ({ page }) => {
  await page.goto("/");
  await waitForLive(page);
  const transfer = await generatedImageTransfer(page, 1024, 1024, "a11y.png");
  await page.dispatchEvent("#dropzone", "drop", { dataTransfer: transfer });
  await expect(page.locator(".job-card")).toHaveAttribute("data-status", "done", { timeout: 90_000 });
  await expect(page.locator('#task-stream .stage-row[data-stage="encode"]')).toHaveCount(1);
  for (const scheme of ["light", "dark"] as const) {
    await page.emulateMedia({ colorScheme: scheme });
    await expectAccessible(page);
  }
});

test("a running job's page, with its live numbers and task stream, passes axe in both schemes", async ({ page }) => {
  await page.goto("/");
  await waitForLive(page);
  const job = await submitSlowJob(page, "a11y-running.png", 6144, 9);
  await page.goto(`/jobs/${job.id}`);
  await waitForLive(page);
  await expect.poll(() => laneTiles(page, "#task-stream", "e2e-worker-1"), { timeout: 60_000 }).toBeGreaterThan(0);
  await expect(page.locator(".job-card")).toHaveAttribute("data-status", "running");
  for (const scheme of ["light", "dark"] as const) {
    await page.emulateMedia({ colorScheme: scheme });
    await expectAccessible(page);
  }
  await expect(page.locator(".job-card"), "checked while it ran").toHaveAttribute("data-status", "running");
  expect((await page.request.post(`/api/jobs/${job.id}/cancel`)).status()).toBe(200);
});

test("every control of the upload page is reachable with the keyboard", async ({ page }) => {
  await page.goto("/");
  await waitForLive(page);
  const reached = new Set<string>();
  for (let i = 0; i < 20; i++) {
    await page.keyboard.press("Tab");
    reached.add(await page.evaluate(() => document.activeElement?.id || document.activeElement?.textContent?.trim() || ""));
  }
  for (const id of ["op-kind", "op-add", "file", "Upload", "Dashboard"]) {
    expect([...reached]).toContain(id);
  }
  // The step picker works from the keyboard alone.
  await page.locator("#op-kind").focus();
  await page.keyboard.press("ArrowDown");
  await page.locator("#op-add").focus();
  await page.keyboard.press("Enter");
  await expect(page.locator("#chain li")).toHaveCount(2);
});
