#!/bin/sh
echo "helper script ran from the action folder"
