#ifndef CMICROHTTPD_H
#define CMICROHTTPD_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <microhttpd.h>
#endif
