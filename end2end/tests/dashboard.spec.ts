import { test, expect } from "@playwright/test";
import { waitForLive } from "./helpers";

test("the dashboard lists the workers as alive", async ({ page }) => {
  await page.goto("/dashboard");
  await waitForLive(page);
  for (const id of ["e2e-worker-1", "e2e-worker-2"]) {
    await expect(page.locator("#workers tr.worker", { hasText: id })).toHaveAttribute("data-status", "alive");
  }
});

test("a stopped worker turns lost on the dashboard, live", async ({ page }) => {
  const pid = Number(process.env.E2E_LEAVING_WORKER_PID);
  test.skip(!pid, "needs the extra worker scripts/test.sh starts");
  await page.goto("/dashboard");
  await waitForLive(page);
  const row = page.locator("#workers tr.worker", { hasText: "e2e-worker-leaving" });
  await expect(row).toHaveAttribute("data-status", "alive");
  process.kill(pid, "SIGTERM");
  // The server's worker timeout is 3 s in scripts/test.sh; no reload.
  await expect(row).toHaveAttribute("data-status", "lost", { timeout: 30_000 });
});
