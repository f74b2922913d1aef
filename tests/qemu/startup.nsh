@echo -off
# Run by the UEFI shell from the startup disk that scripts/qemu-check attaches
# next to the card image. The disk holding RPIQTAG.TXT is this startup disk, so
# the other one is the card. Output between ==RPIQ-...== markers is parsed.
echo "==RPIQ-MAP-BEGIN=="
map -r
echo "==RPIQ-MAP-END=="
if exist fs0:\RPIQTAG.TXT then
  set RPIQ fs1
else
  set RPIQ fs0
endif
echo "==RPIQ-CARD %RPIQ%=="
echo "==RPIQ-LS-BEGIN=="
ls -a -r %RPIQ%:\
echo "==RPIQ-LS-END=="
echo "==RPIQ-DONE=="
reset -s
