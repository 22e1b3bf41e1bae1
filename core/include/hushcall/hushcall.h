/* hushcall/hushcall.h — the whole public API of libhushcall. */
#ifndef HUSHCALL_H
#define HUSHCALL_H

#include "hushcall/error.h"
#include "hushcall/secmem.h"
#include "hushcall/json.h"
#include "hushcall/json_writer.h"
#include "hushcall/base64.h"
#include "hushcall/keys.h"
#include "hushcall/envelope_v1.h"
#include "hushcall/mlkem.h"
#include "hushcall/xwing.h"
#include "hushcall/hpke.h"
#include "hushcall/envelope_v2.h"
#include "hushcall/client.h"
#include "hushcall/engine.h"
#include "hushcall/attest.h"
#include "hushcall/credential.h"
#include "hushcall/enroll.h"
#include "hushcall/tpm.h"
#include "hushcall/replay.h"
#include "hushcall/server.h"
#include "hushcall/version.h"

#endif
