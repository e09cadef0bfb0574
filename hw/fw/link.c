/* The host link (docs/protocol.md) in firmware: COBS frames between zero delimiters, the CRC-32
 * residue check, duplicate suppression, every command, and the token stream of GENERATE. It answers
 * exactly as the golden board (mmfree.driver.golden_board, layout "accelerator") does, byte for byte.
 *
 * Frames are taken whole: device_service() decodes the bytes waiting and executes each command as
 * its closing delimiter arrives, so one receive buffer is enough. Replies are built in one of two
 * frame buffers; the other holds the stored reply (the last reply that was not a NAK), sent again
 * for a duplicate command. NAK, TOKEN and DONE frames are built in the free buffer too, so they never
 * replace the stored reply.
 *
 * A device_service() call that answered a frame does not also produce a token: a running
 * generation moves on at the next call. The host's next command is therefore always seen before the
 * next token is computed, as on the golden board used as a transport.
 */
#include "link.h"
#include "hal.h"
#include "model.h"
#include "sampler.h"
#include "mmfree_config.h"

#define REPLY_MAX (HEADER_SIZE + INFO_SIZE + 8 * REGION_COUNT + CRC_SIZE)   /* INFO: the longest */
#define HISTORY_MASK (TOKEN_HISTORY - 1)

_Static_assert(REGION_COUNT == 4, "the four regions of mmfree.memory_map");
_Static_assert(TOKEN_HISTORY <= 32768 && (TOKEN_HISTORY & HISTORY_MASK) == 0,
               "TOKEN_HISTORY is a power of two that INFO can report");
_Static_assert(REPLY_MAX < 254, "send_cobs() makes no full COBS blocks");

static const uint32_t region_bytes[REGION_COUNT] = {
    [REGION_TRITS] = REGION_TRITS_BYTES, [REGION_PARAMS] = REGION_PARAMS_BYTES,
    [REGION_GATES] = REGION_GATES_BYTES, [REGION_SCALARS] = REGION_SCALARS_BYTES,
};

/* INFO after its magic, then the regions (tags and sizes) */
#define U16(v) (uint8_t)(v), (uint8_t)((v) >> 8)
#define U32(v) U16(v), U16((v) >> 16)
static const uint8_t info_head[INFO_SIZE - 4] = {
    PROTOCOL_VERSION, REGION_COUNT, U16(LANES), U16(IMAGE_FORMAT_VERSION), U16(NUMERIC_SPEC_VERSION),
    U32(MAX_VOCAB), U32(MAX_HIDDEN), U32(MAX_INTERMEDIATE), U32(MAX_LAYERS), U32(CLOCK_HZ),
    U32(BUILD_HASH), U16(MAX_WRITE), U16(TOKEN_HISTORY), U32(INFO_FLAGS), U16(ROWS), U16(0),
};

/* CRC-32 of IEEE 802.3 (zlib.crc32) by table (CRC32_TABLE: mmfree_config.h), a byte at a time; on a
 * little-endian processor, from a word-aligned p, four bytes (one load) at a time. */
static uint32_t crc32(const uint8_t *p, uint32_t n)
{
    uint32_t c = 0xffffffffu;
    if (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && ((uintptr_t)p & 3u) == 0) {
        for (; n >= 4; n -= 4, p += 4) {
            c ^= *(const word_t *)(const void *)p;
            c = (c >> 8) ^ CRC32_TABLE[c & 0xffu];
            c = (c >> 8) ^ CRC32_TABLE[c & 0xffu];
            c = (c >> 8) ^ CRC32_TABLE[c & 0xffu];
            c = (c >> 8) ^ CRC32_TABLE[c & 0xffu];
        }
    }
    while (n--)
        c = (c >> 8) ^ CRC32_TABLE[(c ^ *p++) & 0xffu];
    return ~c;
}

/* little-endian fields at any offset (kept out of line: they are used everywhere) */
static __attribute__((noinline)) uint32_t get32(const uint8_t *p)
{
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static __attribute__((noinline)) void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* --- state ------------------------------------------------------------------------------------ */

static struct {
    /* the receiver: the frame since the last delimiter */
    uint32_t count;             /* encoded bytes (counting stops at MAX_ENCODED + 1) */
    uint32_t len;               /* decoded bytes in rx[] */
    uint32_t block;             /* bytes left in the current COBS block */
    uint8_t code;               /* the current block's code byte */
    /* the transmitter */
    uint32_t frame_len[2];
    uint8_t kept;               /* frame[kept] is the stored reply */
    uint8_t have_last;          /* a command was executed: last_seq and last_crc are valid */
    uint8_t last_seq;
    uint32_t last_crc;
    uint8_t answered;           /* this device_service() call answered a frame */
    uint8_t nak_last;           /* the last reply was a NAK (the error light) */
    /* counters (STATUS) */
    uint32_t frames_ok, frames_rejected, naks_sent, position, cycles;
    uint8_t last_error;
    /* the model */
    uint8_t dirty;              /* a WRITE since the model was last read */
    uint8_t context;            /* a token was processed since RESET_STATE (or the model changed) */
    /* the generation */
    uint8_t gen_valid;          /* a GENERATE was accepted since device_init() */
    uint8_t gen_running;
    uint8_t gen_stop;
    uint8_t gen_seq;
    uint8_t gen_reason;
    uint32_t gen_n, gen_produced;
    sampler_t sampler;
} s;

static uint8_t rx[MAX_ENCODED] __attribute__((aligned(4)));  /* decoded bytes: at most MAX_ENCODED - 1 */
static uint8_t frame[2][REPLY_MAX];
static struct {
    uint32_t token, cycles;
} history[TOKEN_HISTORY];

/* --- frames out -------------------------------------------------------------------------------- */

/* 00 | COBS(f[0..n-1]) | 00, as mmfree.protocol.cobs_encode. The frames sent are shorter than 254
 * bytes, so every block ends at a zero or at the end of the frame (no full blocks). */
static void send_cobs(const uint8_t *f, uint32_t n)
{
    uint32_t pos = 0, end;
    hal_tx(0);
    for (;;) {
        for (end = pos; end < n && f[end]; end++)
            ;
        hal_tx((uint8_t)(end - pos + 1));
        while (pos < end)
            hal_tx(f[pos++]);
        if (end == n)
            break;
        pos++;                  /* the zero that ended the block */
    }
    hal_tx(0);
}

/* The payload area of the frame being built (the buffer not holding the stored reply). */
static uint8_t *payload(void)
{
    return frame[s.kept ^ 1] + HEADER_SIZE;
}

/* Complete the frame being built (n payload bytes) and send it. */
static void send(uint8_t seq, uint8_t code, uint32_t n)
{
    uint8_t *f = frame[s.kept ^ 1];
    f[0] = seq;
    f[1] = code;
    n += HEADER_SIZE;
    put32(f + n, crc32(f, n));
    n += CRC_SIZE;
    s.frame_len[s.kept ^ 1] = n;
    send_cobs(f, n);
}

static void nak(uint8_t seq, uint8_t error, uint8_t command, uint32_t arg)
{
    uint8_t *o = payload();
    put32(o, error | (uint32_t)command << 8);
    put32(o + 4, arg);
    send(seq, REPLY_NAK, 8);
    s.naks_sent++;
    s.last_error = error;
    s.nak_last = 1;
}

/* The payload of TOKEN `index` (held in the history) and of the DONE of the generation. */
static uint32_t token_payload(uint8_t *o, uint32_t index)
{
    put32(o, index);
    put32(o + 4, history[index & HISTORY_MASK].token);
    put32(o + 8, history[index & HISTORY_MASK].cycles);
    return 12;
}

static uint32_t done_payload(uint8_t *o)
{
    put32(o, s.gen_produced);
    put32(o + 4, s.gen_reason);
    return 8;
}

/* --- the model --------------------------------------------------------------------------------- */

/* Read the model again after a WRITE; whether one is loaded. A new shape or no model ends the
 * context, as the golden board's re-parse does. */
static int model_ready(void)
{
    if (s.dirty) {
        s.dirty = 0;
        if (model_load() != 0) {
            s.context = 0;
            s.position = 0;
        }
    }
    return model_loaded();
}

static void step(uint32_t token)
{
    uint32_t t0 = hal_cycles();
    model_step(token);
    s.cycles = hal_cycles() - t0;
    s.position++;
    s.context = 1;
}

/* --- commands ---------------------------------------------------------------------------------- */

/* Each returns 0 with its reply built (code in *code, payload length in *n), or an ERR_* code with
 * the NAK's argument in *n; a refused command changes nothing. */

static int region_range(const uint8_t *a, uint32_t length, uint32_t *n)
{
    uint32_t region = a[0], offset = get32(a + 4);
    if (region >= REGION_COUNT) {
        *n = region;
        return ERR_BAD_REGION;
    }
    if (offset > region_bytes[region] || length > region_bytes[region] - offset) {
        *n = offset;
        return ERR_BAD_RANGE;
    }
    return 0;
}

static int cmd_status(uint8_t *o)
{
    uint32_t flags = 0;
    if (!s.gen_running)
        model_ready();
    if (model_loaded())
        flags |= STATUS_FLAG_LOADED;
    if (s.context)
        flags |= STATUS_FLAG_CONTEXT;
    put32(o, s.cycles);
    put32(o + 4, s.gen_produced);
    put32(o + 8, s.position);
    put32(o + 12, s.frames_ok);
    put32(o + 16, s.frames_rejected);
    put32(o + 20, s.naks_sent);
    put32(o + 24, s.last_error | (uint32_t)(s.gen_running ? STATE_GENERATING : STATE_IDLE) << 8 |
                  flags << 16);
    return STATUS_SIZE;
}

static int execute(uint8_t seq, uint8_t cmd, const uint8_t *a, uint32_t len, uint8_t *code, uint32_t *n)
{
    uint8_t *o = payload();
    uint32_t i, v, lo, hi;
    int err;

    switch (cmd) {
#define LENGTHS(c) case CMD_##c: lo = LEN_MIN_##c; hi = LEN_MAX_##c; break;
    LENGTHS(INFO) LENGTHS(STATUS) LENGTHS(WRITE) LENGTHS(VERIFY) LENGTHS(RESET_STATE)
    LENGTHS(FEED) LENGTHS(GENERATE) LENGTHS(STOP) LENGTHS(RESEND)
#undef LENGTHS
    default:
        *n = cmd;
        return ERR_UNKNOWN_COMMAND;
    }
    if (len < lo || len > hi) {
        *n = len;
        return ERR_BAD_LENGTH;
    }
    *code = REPLY_ACK;
    *n = 0;
    if (s.gen_running && cmd != CMD_INFO && cmd != CMD_STATUS && cmd != CMD_STOP && cmd != CMD_RESEND)
        return ERR_BUSY;

    switch (cmd) {
    case CMD_INFO:
        for (i = 0; i < 4; i++)
            o[i] = (uint8_t)INFO_MAGIC[i];
        for (i = 0; i < INFO_SIZE - 4; i++)
            o[4 + i] = info_head[i];
        for (i = 0; i < REGION_COUNT; i++) {
            for (v = 0; v < 4; v++)
                o[INFO_SIZE + 8 * i + v] = (uint8_t)REGION_TAGS[i][v];
            put32(o + INFO_SIZE + 8 * i + 4, region_bytes[i]);
        }
        *n = INFO_SIZE + 8 * REGION_COUNT;
        return 0;

    case CMD_STATUS:
        *n = cmd_status(o);
        return 0;

    case CMD_WRITE:
        len -= 8;
        if ((err = region_range(a, len, n)) != 0)
            return err;
        {
            uint8_t *mem = hal_region(a[0]) + get32(a + 4);
            for (i = 0; i < len; i++)
                mem[i] = a[8 + i];
        }
        s.dirty = 1;
        *n = 0;
        return 0;

    case CMD_VERIFY:
        if ((err = region_range(a, get32(a + 8), n)) != 0)
            return err;
        put32(o, crc32(hal_region(a[0]) + get32(a + 4), get32(a + 8)));
        *n = 4;
        return 0;

    case CMD_RESET_STATE:
        model_reset();
        s.context = 0;
        s.position = 0;
        return 0;

    case CMD_FEED:
        if (len % 4)
            return ERR_BAD_LENGTH;          /* arg 0, as FeedRequest.unpack refuses it */
        if (!model_ready())
            return ERR_NOT_LOADED;
        for (i = 0; i < len; i += 4) {
            v = get32(a + i);
            if (v >= model_vocab()) {
                *n = v;
                return ERR_BAD_TOKEN;
            }
        }
        for (i = 0; i < len; i += 4)
            step(get32(a + i));
        put32(o, s.position);
        put32(o + 4, argmax_i32(model_logits(), model_vocab()));
        put32(o + 8, s.cycles);
        *n = 12;
        return 0;

    case CMD_GENERATE:
        if (!model_ready())
            return ERR_NOT_LOADED;
        if (!s.context)
            return ERR_NO_CONTEXT;
        /* every u16 temperature is at most TEMPERATURE_MAX and every top_k at most 65535 */
        sampler_init(&s.sampler, a[4] | (uint32_t)a[5] << 8, a[6] | (uint32_t)a[7] << 8, get32(a + 8));
        s.gen_n = get32(a);
        s.gen_seq = seq;
        s.gen_produced = 0;
        s.gen_stop = 0;
        s.gen_reason = DONE_COMPLETE;
        s.gen_valid = 1;
        s.gen_running = 1;
        return 0;

    case CMD_STOP:
        put32(o, s.gen_running);
        if (s.gen_running)
            s.gen_stop = 1;
        *n = 4;
        return 0;

    default:                                /* CMD_RESEND */
        v = get32(a);
        if (!s.gen_valid || (v < s.gen_produced && s.gen_produced - v > TOKEN_HISTORY)) {
            *n = v;
            return ERR_GONE;
        }
        if (v < s.gen_produced) {
            *code = REPLY_TOKEN;
            *n = token_payload(o, v);
        } else if (!s.gen_running) {
            *code = REPLY_DONE;
            *n = done_payload(o);
        }
        return 0;
    }
}

/* --- frames in --------------------------------------------------------------------------------- */

/* The status lights: loaded, busy (a command or a generation running), error (the last reply a NAK). */
static void show_status(int busy)
{
    hal_status((model_loaded() ? 1u : 0u) | (busy ? 2u : 0u) | (s.nak_last ? 4u : 0u));
}

/* A closing delimiter after a non-empty frame: check it (docs/protocol.md §2.4), then execute it. */
static void frame_end(void)
{
    uint8_t seq = s.len > 0 ? rx[0] : 0, cmd = s.len > 1 ? rx[1] : 0xff, code;
    uint32_t crc, n;
    int err;

    s.answered = 1;
    if (s.count > MAX_ENCODED || s.block) {                 /* no byte of it is read */
        seq = 0;
        cmd = 0xff;
    }
    if (s.count > MAX_ENCODED)
        err = ERR_TOO_LONG;
    else if (s.block)
        err = ERR_BAD_FRAME;                                /* the last block runs past the end */
    else if (s.len < MIN_FRAME)
        err = ERR_BAD_FRAME;
    else if (s.len > MAX_FRAME)
        err = ERR_TOO_LONG;
    else if (crc32(rx, s.len) != CRC_RESIDUE)
        err = ERR_BAD_CRC;
    else
        err = 0;
    if (err) {
        s.frames_rejected++;
        nak(seq, (uint8_t)err, cmd, 0);
        return;
    }

    s.frames_ok++;
    crc = get32(rx + s.len - CRC_SIZE);
    if (s.have_last && seq == s.last_seq && crc == s.last_crc) {
        send_cobs(frame[s.kept], s.frame_len[s.kept]);      /* a duplicate: the stored reply */
        s.nak_last = 0;
        return;
    }
    show_status(1);                         /* busy until device_service() returns */
    err = execute(seq, cmd, rx + HEADER_SIZE, s.len - MIN_FRAME, &code, &n);
    if (err) {
        nak(seq, (uint8_t)err, cmd, n);
        return;
    }
    send(seq, code, n);
    s.kept ^= 1;
    s.have_last = 1;
    s.last_seq = seq;
    s.last_crc = crc;
    s.nak_last = 0;
}

/* One byte from the host: COBS decoded on the fly into rx[]. */
static void receive(uint8_t b)
{
    if (b == 0) {
        if (s.count)
            frame_end();
        s.count = s.len = s.block = 0;
        return;
    }
    if (s.count > MAX_ENCODED)
        return;                             /* too long: only the delimiter matters now */
    if (++s.count > MAX_ENCODED)
        return;
    if (s.block) {
        rx[s.len++] = b;
        s.block--;
        return;
    }
    if (s.count > 1 && s.code != 0xff)      /* a block shorter than 254 bytes stood for a zero */
        rx[s.len++] = 0;
    s.code = b;
    s.block = b - 1u;
}

/* --- the token stream -------------------------------------------------------------------------- */

static void generate_next(void)
{
    uint32_t index = s.gen_produced, token;
    if (s.gen_stop || index >= s.gen_n) {
        s.gen_running = 0;
        s.gen_reason = index < s.gen_n ? DONE_STOPPED : DONE_COMPLETE;
        send(s.gen_seq, REPLY_DONE, done_payload(payload()));
        return;
    }
    token = sampler_pick(&s.sampler, model_logits(), model_vocab());
    history[index & HISTORY_MASK].token = token;
    history[index & HISTORY_MASK].cycles = s.cycles;
    s.gen_produced = index + 1;
    send(s.gen_seq, REPLY_TOKEN, token_payload(payload(), index));
    step(token);
}

/* --- the interface ----------------------------------------------------------------------------- */

void device_init(void)
{
    uint8_t *p = (uint8_t *)&s;
    uint32_t i;
    for (i = 0; i < sizeof s; i++)
        p[i] = 0;
    s.dirty = 1;
    model_reset();
    hal_status(0);
}

void device_service(void)
{
    int c = hal_rx();
    s.answered = 0;
    while (c >= 0) {
        receive((uint8_t)c);
        c = hal_rx();
        /* the rest of a COBS block as receive() would take it, with the counts in registers: data
         * bytes while the frame is not too long (the upload's bulk) */
        if (s.block && s.count < MAX_ENCODED) {
            uint32_t block = s.block, len = s.len, count = s.count;
            while (c > 0 && block && count < MAX_ENCODED) {
                rx[len++] = (uint8_t)c;
                block--;
                count++;
                c = hal_rx();
            }
            s.block = block;
            s.len = len;
            s.count = count;
        }
    }
    if (s.gen_running && !s.answered)
        generate_next();
    show_status(s.gen_running);
}
