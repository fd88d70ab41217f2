import { describe, expect, test } from "@jest/globals";
import { DisposedError } from "../../lib/errors.js";
import { Lifecycle } from "../../lib/lifecycle.js";

/** A promise settled from outside, to hold a call open. */
function gate<T = void>(): { promise: Promise<T>; open: (value: T) => void } {
  let open!: (value: T) => void;
  const promise = new Promise<T>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

describe("Lifecycle: one lock and dispose guard", () => {
  test("exclusive calls run one at a time, in the order they were made, whatever the earlier ones' outcome", async () => {
    const life = new Lifecycle("Thing");
    const events: string[] = [];
    const first = gate();
    const a = life.exclusive(async () => {
      events.push("a start");
      await first.promise;
      events.push("a end");
      throw new Error("a failed");
    });
    const b = life.exclusive(async () => {
      events.push("b");
      return 2;
    });
    await Promise.resolve();
    expect(events).toEqual(["a start"]);
    first.open();
    await expect(a).rejects.toThrow("a failed");
    await expect(b).resolves.toBe(2);
    expect(events).toEqual(["a start", "a end", "b"]);
  });

  test("dispose lets accepted calls finish, then releases once; later calls are refused as rejections", async () => {
    const life = new Lifecycle("Thing");
    const hold = gate<number>();
    const running = life.exclusive(() => hold.promise);
    let released = 0;
    const disposing = life.dispose(() => {
      released++;
    });
    const again = life.dispose(() => {
      released += 100;
    });
    expect(life.disposed).toBe(true);
    const refused = life.exclusive(async () => 1);
    await expect(refused).rejects.toEqual(new DisposedError("Thing"));
    expect(() => life.assertLive()).toThrow(DisposedError);
    expect(released).toBe(0); // the accepted call still runs
    hold.open(7);
    await expect(running).resolves.toBe(7);
    await disposing;
    await again;
    expect(released).toBe(1);
  });

  test("a refused call never throws synchronously", () => {
    const life = new Lifecycle("Thing");
    void life.dispose(() => undefined);
    let result: Promise<unknown> | undefined;
    expect(() => {
      result = life.exclusive(async () => 1);
    }).not.toThrow();
    return expect(result).rejects.toBeInstanceOf(DisposedError);
  });
});
