/* hushcall/version.h — the library's version, for user agents and callers
 * that check what they were compiled against. */
#ifndef HUSHCALL_VERSION_H
#define HUSHCALL_VERSION_H

#define HUSHCALL_VERSION "0.1.0"

#endif
