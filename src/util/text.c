/*
 * text.c - see text.h.
 */
#include "util/text.h"

size_t text_edit_distance(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t row[TEXT_EDIT_MAX + 1];

	if (alen > TEXT_EDIT_MAX || blen > TEXT_EDIT_MAX)
		return SIZE_MAX;
	for (size_t j = 0; j <= blen; j++)
		row[j] = j;
	for (size_t i = 1; i <= alen; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (size_t j = 1; j <= blen; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);

			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[blen];
}
