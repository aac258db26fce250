/* Makes clang emit BTF for a struct that the program only uses through local
 * pointers (ring buffer records), so TypeScript codecs can be checked against
 * it. The variable lands in a section libbpf skips: it costs nothing at load. */
#ifndef WAGGLE_LIB_BTF_EXPORT_H
#define WAGGLE_LIB_BTF_EXPORT_H

#define BTF_EXPORT(type, name) \
	type *__btf_export_##name __attribute__((unused, section(".waggle.btf")))

#endif
