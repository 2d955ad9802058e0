-- chapters.lua — chapter numbers from the chapters' directory names, and the
-- previous/next links at the end of every chapter.
--
-- book/build_book.py puts a marker before every chapter's text,
--
--   ::: {.crbook-chapter number="8" dir="08-fpn-camvid"}
--   :::
--
-- (the number is the directory name's leading digits), and one before what follows
-- the last chapter (the appendix): `::: {.crbook-chapters-end}`. This filter removes
-- the markers, gives every numbered heading of a chapter its number as pandoc's
-- `number` attribute (the chapter's number, then the section counters: 8, 8.1,
-- 8.1.2), which pandoc's HTML and EPUB writers show in the heading and the table of
-- contents in place of their own count, so that chapters 6 and 7 may be missing
-- while chapter 8 is still chapter 8. At the end of each chapter it adds a
-- `div.chapter-nav` linking the previous and the next chapter of the book.
-- Headings before the first marker (the front matter) are left alone, as are
-- headings marked {.unnumbered}.

local function is_marker(b, class)
  return b.t == 'Div' and b.classes:includes(class)
end

-- "8, A real network: ..." as plain text (the heading's inlines, stringified).
local function label(ch)
  return ch.number .. ', ' .. pandoc.utils.stringify(ch.title)
end

-- The chapters in book order: { number, id, title (inlines) }, from the markers and
-- the first level-1 heading after each.
local function collect(blocks)
  local chapters, cur = {}, nil
  for _, b in ipairs(blocks) do
    if is_marker(b, 'crbook-chapter') then
      cur = { number = b.attributes.number, dir = b.attributes.dir }
      chapters[#chapters + 1] = cur
    elseif is_marker(b, 'crbook-chapters-end') then
      cur = nil
    elseif cur and not cur.id and b.t == 'Header' and b.level == 1 then
      cur.id, cur.title = b.identifier, b.content
    end
  end
  for _, ch in ipairs(chapters) do
    if not tonumber(ch.number) then
      error('\n[book] chapters: chapter ' .. tostring(ch.dir) .. ': number "' ..
            tostring(ch.number) .. '" is not a number\n', 0)
    end
    if not ch.id or ch.id == '' then
      error('\n[book] chapters: chapter ' .. tostring(ch.dir) .. ' has no "# " heading ' ..
            '(its title) at the top of chapter.md\n', 0)
    end
  end
  return chapters
end

-- The links at the end of chapter i: previous and next chapter of the book.
local function nav(chapters, i)
  local inl = pandoc.List()
  local prev, next = chapters[i - 1], chapters[i + 1]
  if prev then
    inl:insert(pandoc.Span({ pandoc.Link({ pandoc.Str('← Chapter ' .. label(prev)) },
                                         '#' .. prev.id, '', pandoc.Attr('', {}, { { 'rel', 'prev' } })) },
                           pandoc.Attr('', { 'chapter-prev' })))
  end
  if next then
    if #inl > 0 then inl:insert(pandoc.Space()) end
    inl:insert(pandoc.Span({ pandoc.Link({ pandoc.Str('Chapter ' .. label(next) .. ' →') },
                                         '#' .. next.id, '', pandoc.Attr('', {}, { { 'rel', 'next' } })) },
                           pandoc.Attr('', { 'chapter-next' })))
  end
  if #inl == 0 then return nil end
  return pandoc.Div({ pandoc.Plain(inl) },
                    pandoc.Attr('', { 'chapter-nav' }, { { 'data-chapter', chapters[i].number } }))
end

-- Numbers the headings of blocks (recursively through divs) in place; counters[k] is
-- the count at level k within the current chapter.
local function number_headings(blocks, state)
  for _, b in ipairs(blocks) do
    if b.t == 'Header' and state.chapter and not b.classes:includes('unnumbered') then
      local c = state.counters
      if b.level == 1 then
        for k in pairs(c) do c[k] = nil end
        b.attributes.number = state.chapter
      else
        c[b.level] = (c[b.level] or 0) + 1
        for k = b.level + 1, 6 do c[k] = nil end
        local parts = { state.chapter }
        for k = 2, b.level do parts[#parts + 1] = tostring(c[k] or 0) end
        b.attributes.number = table.concat(parts, '.')
      end
    elseif b.t == 'Div' then
      number_headings(b.content, state)
    end
  end
end

function Pandoc(doc)
  local chapters = collect(doc.blocks)
  if #chapters == 0 then return nil end
  local out, state, i = pandoc.List(), { counters = {} }, 0
  local function close_chapter()
    if i > 0 then
      local n = nav(chapters, i)
      if n then out:insert(n) end
    end
  end
  for _, b in ipairs(doc.blocks) do
    if is_marker(b, 'crbook-chapter') then
      close_chapter()
      i = i + 1
      state.chapter = tostring(tonumber(chapters[i].number))
      state.counters = {}
    elseif is_marker(b, 'crbook-chapters-end') then
      close_chapter()
      i = 0
      state.chapter = nil
    else
      if state.chapter then number_headings({ b }, state) end
      out:insert(b)
    end
  end
  close_chapter()
  doc.blocks = out
  return doc
end
