// The one part of a tap test the shared helpers need: they register their own cleanup.
export interface Teardown {
  teardown(fn: () => unknown): void;
}
