#ifndef CCURL_H
#define CCURL_H
#include <curl/curl.h>
#include <stddef.h>

// libcurl's curl_easy_setopt / curl_easy_getinfo are variadic, which Swift cannot call: these
// non-variadic wrappers take each argument kind explicitly.
typedef size_t (*ccurl_data_callback)(char *data, size_t size, size_t count, void *context);

CURLcode ccurl_setopt_long(CURL *handle, CURLoption option, long value);
CURLcode ccurl_setopt_string(CURL *handle, CURLoption option, const char *value);
CURLcode ccurl_setopt_pointer(CURL *handle, CURLoption option, void *value);
CURLcode ccurl_setopt_offset(CURL *handle, CURLoption option, curl_off_t value);
CURLcode ccurl_setopt_callback(CURL *handle, CURLoption option, ccurl_data_callback callback);
CURLcode ccurl_setopt_headers(CURL *handle, struct curl_slist *headers);
long ccurl_response_code(CURL *handle);

// The multi interface (one thread drives many transfers). curl_multi_setopt is variadic too.
CURLMcode ccurl_multi_setopt_long(CURLM *multi, CURLMoption option, long value);
// The fields of a finished transfer's CURLMsg (the union is awkward from Swift).
// Returns 1 and fills `handle`/`result` when `message` reports a finished transfer, 0 otherwise.
int ccurl_message_done(CURLMsg *message, CURL **handle, CURLcode *result);
#endif
