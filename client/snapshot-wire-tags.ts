/**
 * The wire tags of the pages QueryTwins streams: `QueryTwinsResponse.twins`, the fields of
 * `TwinSnapshot`, and the `google.protobuf` messages a state is made of. One table for the
 * server's hand-written encoder and the client's hand-written decoder.
 */

// Tags (field number << 3 | wire type): 0 is varint, 1 is 64-bit, 2 is length-delimited.
/** `QueryTwinsResponse.twins`, a repeated message: one tag, length and snapshot per twin, so a page is its twins' entries end to end. */
export const TAG_RESPONSE_TWINS = (3 << 3) | 2;
export const TAG_SNAPSHOT_KIND = (1 << 3) | 2;
export const TAG_SNAPSHOT_ID = (2 << 3) | 2;
export const TAG_SNAPSHOT_STATE = (3 << 3) | 2;
export const TAG_SNAPSHOT_VERSION = (4 << 3) | 0;
export const TAG_SNAPSHOT_LAST_SEQ = (5 << 3) | 0;
export const TAG_SNAPSHOT_LAST_EVENT_TIME = (6 << 3) | 2;
export const TAG_SNAPSHOT_OWNER_NODE_ID = (7 << 3) | 2;
export const TAG_TIMESTAMP_SECONDS = (1 << 3) | 0;
export const TAG_TIMESTAMP_NANOS = (2 << 3) | 0;
/** `Struct.fields` is a map, sent as repeated entries `{ string key = 1; Value value = 2; }`. */
export const TAG_STRUCT_ENTRY = (1 << 3) | 2;
export const TAG_ENTRY_KEY = (1 << 3) | 2;
export const TAG_ENTRY_VALUE = (2 << 3) | 2;
export const TAG_VALUE_NULL = (1 << 3) | 0;
export const TAG_VALUE_NUMBER = (2 << 3) | 1;
export const TAG_VALUE_STRING = (3 << 3) | 2;
export const TAG_VALUE_BOOL = (4 << 3) | 0;
export const TAG_VALUE_STRUCT = (5 << 3) | 2;
export const TAG_VALUE_LIST = (6 << 3) | 2;
export const TAG_LIST_VALUES = (1 << 3) | 2;
