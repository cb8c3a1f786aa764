import { test, expect } from "@playwright/test";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { expectAccessible, generatedPng, waitForLive } from "./helpers";

// Several files dropped at once go as one batch: a file that is not an image
// is refused by name, the others finish, and the batch's zip holds their results.
test("drop several files, follow the batch, download every result as one zip", async ({ page }) => {
  await page.goto("/");
  await waitForLive(page);
  const transfer = await page.evaluateHandle(async () => {
    const png = async (width: number, height: number, hue: number) => {
      const canvas = document.createElement("canvas");
      canvas.width = width;
      canvas.height = height;
      const ctx = canvas.getContext("2d")!;
      for (let i = 0; i < 300; i++) {
        ctx.fillStyle = `hsl(${(hue + i * 29) % 360} 70% 50%)`;
        ctx.fillRect((i * 89) % width, (i * 47) % height, 60, 60);
      }
      return new Promise<Blob>((resolve) => canvas.toBlob((b) => resolve(b!), "image/png"));
    };
    const transfer = new DataTransfer();
    // Sizes no other test uses: the result cache does not answer them from another test's job.
    transfer.items.add(new File([await png(1032, 1030, 10)], "one.png", { type: "image/png" }));
    transfer.items.add(new File(["these are not pixels"], "notes.txt", { type: "text/plain" }));
    transfer.items.add(new File([await png(1072, 1030, 200)], "two.png", { type: "image/png" }));
    return transfer;
  });
  await page.dispatchEvent("#dropzone", "drop", { dataTransfer: transfer });

  const file = (name: string) => page.locator(`.batch-file[data-file="${name}"]`);
  await expect(file("notes.txt")).toHaveAttribute("data-state", "refused");
  await expect(file("notes.txt")).toContainText("not an image");
  await expect(file("one.png")).toHaveAttribute("data-state", "accepted", { timeout: 30_000 });
  await expect(file("two.png")).toHaveAttribute("data-state", "accepted", { timeout: 30_000 });
  await expect(page.locator("#batch-uploads")).toContainText("1 refused");
  await expectAccessible(page);

  await page.locator("#batch-link").click();
  await expect(page).toHaveURL(/\/batches\/[0-9a-f-]{36}$/);
  await expect(page.locator("#batch-summary")).toContainText("2 of 2 images done", { timeout: 60_000 });
  await expect(page.locator("tr.batch-job[data-status=done]")).toHaveCount(2);
  await expect(page.locator("#batch-zip")).toHaveAttribute("aria-disabled", "false");
  for (const scheme of ["light", "dark"] as const) {
    await page.emulateMedia({ colorScheme: scheme });
    await expectAccessible(page);
  }

  const zip = await page.request.get((await page.locator("#batch-zip").getAttribute("href"))!);
  expect(zip.status()).toBe(200);
  expect(zip.headers()["content-type"]).toBe("application/zip");
  const archive = await zip.body();
  expect(archive.subarray(0, 4).toString("latin1")).toBe("PK\u0003\u0004");
  for (const name of ["one.png", "two.png"]) expect(archive.includes(Buffer.from(name))).toBe(true);
  expect(archive.includes(Buffer.from("notes"))).toBe(false);
  // Entries are stored as they are: each job's result lies in the zip byte for byte.
  const links = page.locator("tr.batch-job a");
  for (let i = 0; i < 2; i++) {
    const job = (await links.nth(i).getAttribute("href"))!.split("/").pop();
    const result = await (await page.request.get(`/api/jobs/${job}/result`)).body();
    expect(archive.indexOf(result)).toBeGreaterThan(0);
  }
});

test("a batch's cancelled job runs again from the batch's page", async ({ page }) => {
  await page.goto("/");
  await waitForLive(page);
  const batch = await (await page.request.post("/api/batches")).json();
  // A size no other test uses, and a slow chain, so that the cancel comes first.
  const png = await generatedPng(page, 2080, 2080);
  const created = await page.request.post("/api/jobs", {
    multipart: {
      image: { name: "again.png", mimeType: "image/png", buffer: png },
      ops: JSON.stringify(Array(6).fill({ op: "gaussian_blur", kernel: 51 })),
      batch: batch.id,
    },
  });
  expect(created.status()).toBe(201);
  const job = await created.json();
  expect((await page.request.post(`/api/jobs/${job.id}/cancel`)).status()).toBe(200);

  await page.goto(`/batches/${batch.id}`);
  await expect(page.locator("#batch-summary")).toContainText("1 failed or cancelled");
  await page.locator("#batch-retry").click();
  await expect(page.locator("#batch-summary")).toContainText("1 of 1 images done", { timeout: 90_000 });
  await expect(page.locator("#batch-retry")).toHaveCount(0);
  // The cancelled job was replaced by the new one.
  await expect(page.locator(`tr.batch-job a[href="/jobs/${job.id}"]`)).toHaveCount(0);
  await expect(page.locator("tr.batch-job")).toHaveCount(1);
});

test("a folder chosen goes as a batch, its non-images refused by name", async ({ page }) => {
  await page.goto("/");
  await waitForLive(page);
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), "tilepipe-folder-"));
  // Sizes no other test uses.
  fs.writeFileSync(path.join(folder, "left.png"), await generatedPng(page, 1096, 1030));
  fs.writeFileSync(path.join(folder, "right.png"), await generatedPng(page, 1112, 1030));
  fs.writeFileSync(path.join(folder, "README.txt"), "scanned on Tuesday");
  await page.locator("#folder").setInputFiles(folder);
  const file = (name: string) => page.locator(`.batch-file[data-file="${name}"]`);
  await expect(file("README.txt")).toHaveAttribute("data-state", "refused");
  await expect(file("left.png")).toHaveAttribute("data-state", "accepted", { timeout: 30_000 });
  await expect(file("right.png")).toHaveAttribute("data-state", "accepted", { timeout: 30_000 });
  await page.locator("#batch-link").click();
  await expect(page.locator("#batch-summary")).toContainText("2 of 2 images done", { timeout: 60_000 });
  fs.rmSync(folder, { recursive: true });
});
