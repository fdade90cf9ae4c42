#ifndef CCRC32C_H
#define CCRC32C_H
#include <stddef.h>
#include <stdint.h>

// CRC-32C with the CPU's crc32 instruction (x86-64 SSE4.2). The register value goes in and out
// unmodified (no pre/post inversion): the Swift side does the inversions, so both paths agree.
int ccrc32c_hardware_available(void);
uint32_t ccrc32c_hardware_update(uint32_t crc, const void *data, size_t length);
#endif
