import { Page, JSHandle } from "@playwright/test";

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
