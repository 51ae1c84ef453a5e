"""What each request asks for: length distributions, prompts, datasets and the request streams built from them."""
