/* The vocabulary of sf.h as data: each X-macro list becomes an array of (name, value) words. */
#include "sf.h"

#define SF_WORD(constant, value, name) {name, value},
#define SF_WORD_ARRAY(LIST, list_name) static const sf_word LIST##_words[] = {LIST(SF_WORD)};
SF_VOCABULARIES(SF_WORD_ARRAY)

#define SF_LIST_ENTRY(LIST, list_name) {list_name, LIST##_words, (int)(sizeof LIST##_words / sizeof(sf_word))},
static const sf_word_list lists[] = {SF_VOCABULARIES(SF_LIST_ENTRY)};

const sf_word_list *sf_vocabulary(int *count) {
    *count = (int)(sizeof lists / sizeof lists[0]);
    return lists;
}
