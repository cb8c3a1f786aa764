import { Page, JSHandle, expect } from "@playwright/test";
import AxeBuilder from "@axe-core/playwright";

/** Builds, inside the page, a DataTransfer holding a generated PNG of the given size. */
export async function generatedImageTransfer(
  page: Page,
  width: number,
  height: number,
  name = "generated.png",
  transparent = false,
): Promise<JSHandle<DataTransfer>> {
  return page.evaluateHandle(
    async ({ width, height, name, transparent }) => {
      const canvas = document.createElement("canvas");
      canvas.width = width;
      canvas.height = height;
      const ctx = canvas.getContext("2d")!;
      const gradient = ctx.createLinearGradient(0, 0, width, height);
      gradient.addColorStop(0, "#1d4ed8");
      gradient.addColorStop(1, "#f59e0b");
      ctx.fillStyle = gradient;
      ctx.fillRect(0, 0, width, height);
      for (let i = 0; i < 400; i++) {
        ctx.fillStyle = `hsl(${(i * 37) % 360} 80% 55%)`;
        ctx.fillRect((i * 97) % width, (i * 53) % height, 40, 40);
      }
      // A see-through band across the middle: the PNG then carries alpha.
      if (transparent) ctx.clearRect(0, height / 3, width, height / 3);
      const blob: Blob = await new Promise((resolve) => canvas.toBlob((b) => resolve(b!), "image/png"));
      const transfer = new DataTransfer();
      transfer.items.add(new File([blob], name, { type: "image/png" }));
      return transfer;
    },
    { width, height, name, transparent },
  );
}

/** A generated PNG of the given size, made in the page, as bytes. */
export async function generatedPng(page: Page, width: number, height: number): Promise<Buffer> {
  const transfer = await generatedImageTransfer(page, width, height);
  const base64 = await transfer.evaluate(async (t) => {
    const bytes = new Uint8Array(await t.files[0].arrayBuffer());
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(binary);
  });
  return Buffer.from(base64, "base64");
}

/** Submits a job through the API: a generated PNG and a chain of `blurs` 51x51 blurs (slow on purpose). */
export async function submitSlowJob(page: Page, name: string, size: number, blurs: number): Promise<{ id: string; tiles_total: number }> {
  const png = await generatedPng(page, size, size);
  const response = await page.request.post("/api/jobs", {
    multipart: {
      image: { name, mimeType: "image/png", buffer: png },
      ops: JSON.stringify(Array(blurs).fill({ op: "gaussian_blur", kernel: 51 })),
    },
  });
  if (response.status() !== 201) throw new Error(`upload: ${response.status()} ${await response.text()}`);
  return response.json();
}

/** Tiles a worker's lane of a task stream shows (0 without a lane). */
export async function laneTiles(page: Page, stream: string, worker: string): Promise<number> {
  const lane = page.locator(`${stream} tr.lane[data-worker="${worker}"]`);
  return (await lane.count()) === 0 ? 0 : Number(await lane.getAttribute("data-tiles"));
}

/** Width and height from a PNG's IHDR chunk. */
export function pngSize(bytes: Buffer): { width: number; height: number } {
  const signature = "89504e470d0a1a0a";
  if (bytes.subarray(0, 8).toString("hex") !== signature) throw new Error("not a PNG");
  return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) };
}

/** A PNG's colour type from its IHDR chunk: 2 is RGB, 6 is RGBA. */
export function pngColourType(bytes: Buffer): number {
  pngSize(bytes);
  return bytes[25];
}

/** Waits until the app has hydrated and its event stream is connected. */
export async function waitForLive(page: Page) {
  await page.locator(".conn.online").waitFor();
}

/** axe-core's WCAG 2 A/AA rules; any serious or critical violation fails, named. */
export async function expectAccessible(page: Page) {
  const { violations } = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa"]).analyze();
  const serious = violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
  expect(serious).toEqual([]);
}
