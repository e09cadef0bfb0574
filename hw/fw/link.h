/* The host link (docs/protocol.md): frames in, commands executed, replies and tokens out. */
#ifndef MMFREE_LINK_H
#define MMFREE_LINK_H

/* Reset every counter and buffer: the state after configuration. */
void device_init(void);

/* Take every byte waiting (hal_rx), execute the commands they complete, then produce at most one
 * token of a running GENERATE; returns without waiting. The device's main loop calls it forever. */
void device_service(void);

#endif
