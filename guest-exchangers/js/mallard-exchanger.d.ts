// TypeScript types of the Mallard JavaScript exchanger SDK (mallard-exchanger.js).
import * as arrow from 'apache-arrow';

export { arrow };

/** Longest error text handed to the host. */
export const MAX_ERROR_CHARS: number;

/** The WIT `exchange-error` variant a refusal carries. */
export type ExchangeErrorPayload =
  | { tag: 'invalid-params'; val: string }
  | { tag: 'invalid-input'; val: string }
  | { tag: 'failed'; val: string };

/** A refusal the client sees with its message. */
export class ExchangeError extends Error {
  constructor(tag: ExchangeErrorPayload['tag'], message: string);
  readonly payload: ExchangeErrorPayload;
}
/** The parameters are missing, malformed or unknown (InvalidArgument). */
export class InvalidParams extends ExchangeError { constructor(message: string); }
/** The input schema or a batch is not what this exchanger works on (InvalidArgument). */
export class InvalidInput extends ExchangeError { constructor(message: string); }
/** Anything else (Aborted). */
export class Failed extends ExchangeError { constructor(message: string); }

/** What `list_exchangers` shows. */
export interface Info { name: string; version: string; description?: string }

/** Subclass, set `static info`, override `open`, `push` and maybe `finish`. One instance serves one stream. */
export class Exchanger {
  static info: Info;
  /** The output schema `open` returned. */
  output: arrow.Schema;
  /**
   * True when each output batch depends only on its input batch and the params
   * (no state between batches, nothing from `finish`): the server may then run
   * one stream on several instances. Read once, after `open`. Default false.
   */
  stateless: boolean;
  /** Check the input schema and the parameters; return the output schema. */
  open(schema: arrow.Schema, params: Record<string, string>): arrow.Schema;
  /** Transform one input batch into zero or more output batches. */
  push(batch: arrow.RecordBatch): arrow.RecordBatch[];
  /** End of input: return whatever is still held. */
  finish(): arrow.RecordBatch[];
}

/** `header` and `body` (an IPC message) framed as one message of an IPC stream. */
export function frame(header: Uint8Array, body: Uint8Array): Uint8Array;

/** `schema` with `field` added at the end (metadata kept). */
export function withField(schema: arrow.Schema, field: arrow.Field): arrow.Schema;

/** A column of `length` copies of `value` (null for all nulls). */
export function constantColumn<T extends arrow.DataType>(type: T, value: unknown, length: number): arrow.Data<T>;

/** `batch` with `column` added as the last field of `schema`. */
export function appendColumn(batch: arrow.RecordBatch, schema: arrow.Schema, column: arrow.Data | arrow.Vector): arrow.RecordBatch;

/** The `exchange` interface componentize-js exports: `export const exchange = exportExchanger(MyExchanger);` */
export function exportExchanger(cls: new () => Exchanger): {
  describe(): Info;
  open(inputSchema: Uint8Array, params: [string, string][]): unknown;
  Session: new (...args: never[]) => unknown;
};
