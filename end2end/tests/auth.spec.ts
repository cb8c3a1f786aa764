import { test, expect } from "@playwright/test";
import { generatedImageTransfer, waitForLive } from "./helpers";

// scripts/test.sh starts a second server with TILEPIPE_TOKEN=e2e-token.
const tokenBase = process.env.E2E_TOKEN_BASE_URL;

test.describe("a server with an access token", () => {
  test.skip(!tokenBase, "needs the token server scripts/test.sh starts");

  test("asks for the token once, then keeps it for the session", async ({ page }) => {
    const questions: string[] = [];
    page.on("dialog", async (dialog) => {
      questions.push(dialog.message());
      await dialog.accept("e2e-token");
    });
    await page.goto(`${tokenBase}/`);
    await waitForLive(page);
    const transfer = await generatedImageTransfer(page, 1024, 1024, "guarded.png");
    await page.dispatchEvent("#dropzone", "drop", { dataTransfer: transfer });
    await expect(page).toHaveURL(/\/jobs\/[0-9a-f-]{36}$/);
    expect(questions).toHaveLength(1);
    expect(questions[0]).toContain("needs an access token");

    // No workers here: the job waits, and cancelling it needs no new prompt.
    await page.getByRole("link", { name: "Dashboard" }).click();
    const row = page.locator("#jobs tr.job", { hasText: "guarded.png" });
    await row.getByRole("button", { name: "Cancel guarded.png" }).click();
    await expect(row).toHaveAttribute("data-status", "cancelled");
    expect(questions).toHaveLength(1);
  });

  test("declining the prompt says why the upload was refused", async ({ page }) => {
    page.on("dialog", (dialog) => dialog.dismiss());
    await page.goto(`${tokenBase}/`);
    await waitForLive(page);
    const transfer = await generatedImageTransfer(page, 1024, 1024, "refused.png");
    await page.dispatchEvent("#dropzone", "drop", { dataTransfer: transfer });
    await expect(page.locator("#error")).toContainText("needs an access token");
  });
});
