// The official `openai` npm package against a live imagegate (run by
// tests/test_openai_node.py): generate, edit with two images and a mask, stream, and an
// error as the SDK's own type. Prints a JSON transcript; any failed check exits non-zero.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import OpenAI, { toFile } from "openai";

const { IMAGEGATE_URL, IMAGEGATE_KEY, IMAGE_A, IMAGE_B, MASK } = process.env;
const client = new OpenAI({
  apiKey: IMAGEGATE_KEY,
  baseURL: `${IMAGEGATE_URL}/v1`,
  project: "node",
  maxRetries: 0,
});
const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const transcript = [];

function short(value) {
  // The transcript shows each image's size and first bytes, not megabytes of base64.
  return JSON.parse(
    JSON.stringify(value, (key, v) =>
      key === "b64_json" && typeof v === "string" ? `<${v.length} base64 chars: ${v.slice(0, 16)}…>` : v,
    ),
  );
}

function isPng(b64) {
  return Buffer.from(b64, "base64").subarray(0, 8).equals(PNG);
}

// 1. generate
const generateArgs = { model: "local/procedural", prompt: "a red fox in a blue forest", size: "256x256" };
const generated = await client.images.generate(generateArgs);
assert.equal(generated.data.length, 1);
assert.ok(isPng(generated.data[0].b64_json));
assert.equal(generated.size, "256x256");
transcript.push({ call: "client.images.generate", args: generateArgs, result: short(generated) });

// 2. edit: two images and a mask, as multipart
const file = (path, name) => toFile(readFileSync(path), name, { type: "image/png" });
const edited = await client.images.edit({
  model: "local/procedural",
  prompt: "a green meadow",
  image: [await file(IMAGE_A, "first.png"), await file(IMAGE_B, "second.png")],
  mask: await file(MASK, "mask.png"),
});
assert.equal(edited.data.length, 1);
assert.ok(isPng(edited.data[0].b64_json));
transcript.push({
  call: "client.images.edit",
  args: { model: "local/procedural", prompt: "a green meadow", image: ["first.png", "second.png"], mask: "mask.png" },
  result: short(edited),
});

// 3. stream: partial images, then the completed one
const streamArgs = { ...generateArgs, prompt: "violet waves", stream: true, partial_images: 2 };
const stream = await client.images.generate(streamArgs);
const events = [];
for await (const event of stream) {
  events.push(short(event));
}
assert.deepEqual(
  events.map((e) => e.type),
  ["image_generation.partial_image", "image_generation.partial_image", "image_generation.completed"],
);
transcript.push({ call: "client.images.generate (stream)", args: streamArgs, events });

// 4. a streamed edit
const editStream = await client.images.edit({
  model: "local/procedural",
  prompt: "orange sunset",
  image: await file(IMAGE_A, "first.png"),
  mask: await file(MASK, "mask.png"),
  stream: true,
  partial_images: 1,
});
const editEvents = [];
for await (const event of editStream) {
  editEvents.push(short(event));
}
assert.deepEqual(
  editEvents.map((e) => e.type),
  ["image_edit.partial_image", "image_edit.completed"],
);
transcript.push({ call: "client.images.edit (stream)", events: editEvents });

// 5. errors are the SDK's own types
try {
  await client.images.generate({ model: "dall-e-3", prompt: "x" });
  assert.fail("a shut-down model was accepted");
} catch (error) {
  assert.ok(error instanceof OpenAI.NotFoundError, `got ${error}`);
  assert.equal(error.code, "model_not_found");
  transcript.push({ call: "client.images.generate", args: { model: "dall-e-3" }, error: { class: error.constructor.name, status: error.status, error: error.error } });
}
try {
  await client.images.generate({ model: "local/procedural", prompt: "x", n: 11 });
  assert.fail("n=11 was accepted");
} catch (error) {
  assert.ok(error instanceof OpenAI.BadRequestError, `got ${error}`);
  assert.equal(error.param, "n");
  transcript.push({ call: "client.images.generate", args: { n: 11 }, error: { class: error.constructor.name, status: error.status, error: error.error } });
}

console.log(JSON.stringify(transcript, null, 2));
